"""One fault run: cluster up, workload and nemesis, heal, converge, final read, check.

After the final read the brokers stop and every replica's log is read from
its data directory, so the checker also sees whether replicas agree.

`run(RunConfig(...))` returns the checker's result; everything the run
produced stays in `out_dir`: `history.jsonl` (the history the verdict comes
from), `report.txt` and `report.json`, and `cluster/` (etcd's and every
broker's data and log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from comet.aio import CometClient
from comet.errors import CometError
from comet.records import decode_batches
from comet.storage import LogConfig, PartitionLog
from tests.faults.checker import CheckResult, check
from tests.faults.cluster import FaultCluster
from tests.faults.history import History, replica_digest
from tests.faults.nemesis import Nemesis, NemesisConfig
from tests.faults.report import render, save
from tests.faults.workload import Workload, WorkloadConfig

POLL_S = 0.25
FINAL_READ_MAX_FETCHES = 100_000


@dataclass(frozen=True)
class RunConfig:
    """Everything one run is made of."""

    out_dir: Path
    duration_s: float = 600.0
    seed: int = 1
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    nemesis: NemesisConfig = field(default_factory=NemesisConfig)
    lease_ttl_s: int = 2
    replica_lag_time_max_ms: int = 1500
    recovery_s: float = 5.0  # the workload keeps running this long on the healed cluster
    settle_timeout_s: float = 60.0  # to converge, and for consumers to catch up


async def run(config: RunConfig) -> CheckResult:
    """Run the cluster under faults for `duration_s`, then check the history."""
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    history = History(out / "history.jsonl")
    wl = config.workload
    history.record(
        "start",
        wall_clock=datetime.now(UTC).isoformat(),  # to find history times in broker logs
        seed=config.seed,
        duration=config.duration_s,
        topic=wl.topic,
        partitions=wl.partitions,
        settings={
            "workload": asdict(wl),
            "nemesis": asdict(config.nemesis),
            "lease_ttl_s": config.lease_ttl_s,
            "replica_lag_time_max_ms": config.replica_lag_time_max_ms,
        },
    )
    cluster = FaultCluster(
        out / "cluster",
        extra_args=["--replica-lag-time-max-ms", str(config.replica_lag_time_max_ms)],
        lease_ttl_s=config.lease_ttl_s,
    )
    workload: Workload | None = None
    nemesis: Nemesis | None = None
    ends: dict[int, int] | None = None
    try:
        await cluster.start_all()
        await _create_topic(cluster, wl)
        workload = Workload(wl, cluster.client_bootstrap, history)
        await workload.start()
        nemesis = Nemesis(cluster, history, config.seed, wl.topic, config.nemesis)
        await nemesis.run(config.duration_s)
        repaired = await nemesis.heal_everything()
        history.record("healed", repaired=repaired)
        await asyncio.sleep(config.recovery_s)  # by design: traffic on the healed cluster
        await workload.stop_producing(wl.delivery_timeout_s + 15)
        ok, detail = await _converge(cluster, wl, config.settle_timeout_s)
        history.record("converged", ok=ok, detail=detail)
        if ok:
            ends = await _final_read(cluster, wl, history)
            await _wait_for_consumers(workload, ends, config.settle_timeout_s)
    finally:
        try:
            if workload is not None:
                await workload.stop()
            if nemesis is not None:
                await nemesis.close()
        finally:
            await cluster.close_all()
            try:
                if ends is not None:
                    await asyncio.to_thread(_read_replicas, cluster, wl, history, ends)
            finally:
                history.record("end")
                history.close()
    result = check(history.path)
    save(result, out / "report.json")
    (out / "report.txt").write_text(render(result) + "\n")
    return result


async def _create_topic(cluster: FaultCluster, wl: WorkloadConfig) -> None:
    """Create the topic and wait until every partition has a full ISR."""
    async with CometClient(cluster.direct_bootstrap, timeout=5) as admin:
        await admin.create_topic(
            wl.topic, wl.partitions, wl.replication_factor, wl.topic_config, exist_ok=True
        )
        problem = await _poll(lambda: _cluster_problem(admin, cluster, wl), 30.0)
    if problem:
        raise RuntimeError(f"topic {wl.topic} never became fully replicated: {problem}")


async def _poll(probe: Callable[[], Awaitable[str]], timeout_s: float) -> str:
    """Await `probe()` (a problem description, "" when fine) until fine or out of time."""
    deadline = time.monotonic() + timeout_s
    problem = "not checked"
    while time.monotonic() < deadline:
        try:
            problem = await asyncio.wait_for(probe(), 10)
        except (CometError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if not problem:
            return ""
        await asyncio.sleep(POLL_S)
    return problem


async def _cluster_problem(admin: CometClient, cluster: FaultCluster, wl: WorkloadConfig) -> str:
    """What keeps the cluster from being whole ("" when nothing does)."""
    meta = await admin.metadata([wl.topic])
    registered = {b.id for b in meta.brokers}
    if registered != set(cluster.brokers):
        return f"brokers registered: {sorted(registered)}"
    for info in meta.topics.get(wl.topic, ()):
        if not info.leader or len(info.isr) != wl.replication_factor:
            return f"partition {info.id}: leader {info.leader!r}, isr {list(info.isr)}"
    if len(meta.topics.get(wl.topic, ())) != wl.partitions:
        return f"topic {wl.topic} not in the metadata"
    return ""


async def _converge(
    cluster: FaultCluster, wl: WorkloadConfig, timeout_s: float
) -> tuple[bool, str]:
    """Wait until every broker is registered, every ISR is full and every replica caught up."""

    async def problem() -> str:
        async with CometClient(cluster.direct_bootstrap, timeout=3) as admin:
            found = await _cluster_problem(admin, cluster, wl)
        if found:
            return found
        ends: dict[int, dict[str, int]] = {}
        leader_hw: dict[int, int] = {}
        for broker_id, broker in cluster.brokers.items():
            async with CometClient(broker.address, timeout=3) as one:
                description = await one.describe_topic(wl.topic)
            for info in description.partitions:
                ends.setdefault(info.id, {})[broker_id] = info.log_end_offset
                if info.leader == broker_id:
                    leader_hw[info.id] = info.high_watermark
        for partition, by_broker in sorted(ends.items()):
            if len(set(by_broker.values())) != 1 or leader_hw.get(partition) not in set(
                by_broker.values()
            ):
                return f"partition {partition}: log ends {by_broker}, leader hw {leader_hw}"
        return ""

    found = await _poll(problem, timeout_s)
    return not found, found or "every broker registered, every ISR full, replicas equal"


async def _final_read(
    cluster: FaultCluster, wl: WorkloadConfig, history: History
) -> dict[int, int]:
    """Read every partition from its start to its high watermark; returns the ends."""
    ends: dict[int, int] = {}
    async with CometClient(cluster.client_bootstrap, timeout=10) as client:
        for partition in range(wl.partitions):
            start = await client.list_offsets(wl.topic, partition, -2)
            hw = await client.list_offsets(wl.topic, partition, -1)
            recs: list[list[object]] = []
            offset = start
            for _ in range(FINAL_READ_MAX_FETCHES):
                if offset >= hw:
                    break
                fetched = await client.fetch(wl.topic, partition, offset)
                before = offset
                for record in decode_batches(fetched.records, offset):
                    if record.offset >= hw:
                        break
                    recs.append([record.offset, bytes(record.value or b"").decode()])
                    offset = record.offset + 1
                if offset == before:
                    raise RuntimeError(f"final read of partition {partition} stuck at {offset}")
            history.record("final", p=partition, start=start, hw=hw, recs=recs)
            ends[partition] = hw
    history.flush()
    return ends


def _read_replicas(
    cluster: FaultCluster, wl: WorkloadConfig, history: History, ends: dict[int, int]
) -> None:
    """Digest every replica's records below the final high watermark, from its data directory."""
    for broker_id in cluster.brokers:
        for partition, end in sorted(ends.items()):
            log = PartitionLog.open(
                cluster.root / broker_id / wl.topic / str(partition), LogConfig()
            )
            try:
                recs: list[tuple[int, str]] = []
                offset = log.log_start_offset
                for _ in range(FINAL_READ_MAX_FETCHES):
                    if offset >= end:
                        break
                    read = log.read(offset, 1 << 20)
                    before = offset
                    for record in decode_batches(read.records, offset):
                        if record.offset >= end:
                            break
                        recs.append((record.offset, bytes(record.value or b"").decode()))
                        offset = record.offset + 1
                    if offset == before:
                        break  # this replica ends early: the digest will differ
                history.record(
                    "replica",
                    b=broker_id,
                    p=partition,
                    end=log.log_end_offset,
                    count=len(recs),
                    digest=replica_digest(recs),
                )
            finally:
                log.close()


async def _wait_for_consumers(workload: Workload, ends: dict[int, int], timeout_s: float) -> None:
    """Wait until the group has committed every partition up to its end (or time is up)."""

    async def problem() -> str:
        committed = await workload.read_committed()
        behind = {p: committed.get(p, -1) for p, end in ends.items() if committed.get(p, -1) < end}
        return f"committed behind the end: {behind} (ends {ends})" if behind else ""

    found = await _poll(problem, timeout_s)
    workload.history.record("consumers_caught_up", ok=not found, detail=found)
