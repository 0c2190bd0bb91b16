"""`cometctl bench produce|consume|both|e2e`: throughput and latency through real gRPC.

The phases themselves are in comet.cli.bench_phases. This command creates
the topic, runs each phase in this process (with a progress bar on a
terminal) or in --processes worker processes at once, and reports a table
or JSON: records/s, MB/s, latency percentiles, client CPU and, with
--spawn-broker (a broker on loopback in a temporary data directory), the
broker's CPU per phase and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from comet.aio import CometClient
from comet.cli.bench_phases import (
    BenchResult,
    PhaseSpec,
    merge,
    proc_cpu_s,
    proc_peak_rss_mb,
    run_in_process,
    run_phase,
)
from comet.cli.ctl import CtlContext, fail, with_ctx
from comet.cli.local_broker import LocalBroker
from comet.errors import CometError


def split(spec: PhaseSpec, processes: int) -> list[PhaseSpec]:
    """The share of each of `processes` processes: records, and partitions for the raw API."""
    out = []
    for i in range(processes):
        count = spec.count // processes + (1 if i < spec.count % processes else 0)
        parts = spec.partitions[i::processes] if spec.api == "raw" else spec.partitions
        out.append(replace(spec, count=count, partitions=parts))
    return out


def run_phases(
    specs: list[PhaseSpec], processes: int, show_progress: bool, broker: LocalBroker | None
) -> list[BenchResult]:
    """Run the phases in order, each in this process or in `processes` at once."""
    results = []
    for spec in specs:
        cpu_before = proc_cpu_s(broker.pid) if broker else 0.0
        if processes == 1:

            async def one(spec: PhaseSpec = spec) -> BenchResult:
                with Progress(console=Console(stderr=True), disable=not show_progress) as bar:
                    return await run_phase(spec, bar)

            result = asyncio.run(one())
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(processes, mp_context=context) as pool:
                result = merge(list(pool.map(run_in_process, split(spec, processes))))
        if broker is not None:
            result.broker_cpu_s = round(proc_cpu_s(broker.pid) - cpu_before, 2)
            result.broker_peak_rss_mb = round(proc_peak_rss_mb(broker.pid), 1)
        results.append(result)
    return results


@click.command("bench")
@click.argument("mode", type=click.Choice(["produce", "consume", "both", "e2e"]), default="both")
@click.option("--count", "-n", type=click.IntRange(1), default=1_000_000, show_default=True)
@click.option("--size", "-s", type=click.IntRange(0), default=100, show_default=True)
@click.option("--partitions", "-p", type=click.IntRange(1), default=1, show_default=True)
@click.option("--replication-factor", "-r", type=click.IntRange(1), default=1, show_default=True)
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="1", show_default=True)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
)
@click.option(
    "--api",
    type=click.Choice(["raw", "client"]),
    default="raw",
    show_default=True,
    help="raw: ProduceBatch/Fetch with pre-framed batches; client: TopicProducer and Consumer.",
)
@click.option(
    "--per-message",
    is_flag=True,
    help="--api client: consume with messages() (one Message each) instead of batches().",
)
@click.option(
    "--send-batch",
    is_flag=True,
    help="--api client: produce with send_batch() of --batch-records records per call.",
)
@click.option(
    "--rate",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="e2e: records per second.",
)
@click.option("--batch-records", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--in-flight", type=click.IntRange(1), default=8, show_default=True)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Producer/consumer processes per phase (raw API: each takes a share of the partitions).",
)
@click.option("--fetch-max-bytes", type=click.IntRange(1024), default=4 << 20, show_default=True)
@click.option("--topic", default=None, help="Topic to use [default: a new bench-* topic].")
@click.option("--spawn-broker", is_flag=True, help="Start a broker in a temporary directory.")
@click.option("--broker-arg", multiple=True, help="Extra flag for the spawned broker.")
@click.option("--output", type=click.Path(dir_okay=False), help="Also write the JSON here.")
@with_ctx
def bench(
    ctx: CtlContext,
    mode: str,
    count: int,
    size: int,
    partitions: int,
    replication_factor: int,
    acks: str,
    compression: str,
    api: str,
    per_message: bool,
    send_batch: bool,
    rate: int,
    batch_records: int,
    in_flight: int,
    processes: int,
    fetch_max_bytes: int,
    topic: str | None,
    spawn_broker: bool,
    broker_arg: tuple[str, ...],
    output: str | None,
) -> None:
    """Measure produce and consume throughput (MODE: produce, consume, both or e2e)."""
    if processes > 1 and api == "raw" and processes > partitions:
        fail(f"--processes {processes}: with --api raw each process needs a partition of its own")
    if processes > 1 and (mode == "e2e" or (api == "client" and mode != "produce")):
        fail("--processes > 1 is for produce/consume with --api raw and produce with --api client")
    topic = topic or f"bench-{int(time.time())}-{os.getpid()}"
    acks_arg: str | int = "all" if acks == "all" else int(acks)
    broker = LocalBroker(extra_args=list(broker_arg)) if spawn_broker else None
    bootstrap = ctx.bootstrap
    if broker is not None:
        broker.start()
        bootstrap = broker.address
    base = PhaseSpec(
        phase="produce",
        api=api,
        bootstrap=bootstrap,
        topic=topic,
        count=count,
        size=size,
        partitions=list(range(partitions)),
        topic_partitions=partitions,
        batch_records=batch_records,
        in_flight=in_flight,
        acks=acks_arg,
        compression=None if compression == "none" else compression,
        fetch_max_bytes=fetch_max_bytes,
        per_message=per_message,
        send_batch=send_batch,
        rate=rate,
    )
    phases = {"both": ["produce", "consume"], "e2e": ["e2e"]}.get(mode, [mode])
    show_progress = not ctx.as_json and Console(stderr=True).is_terminal

    async def create() -> None:
        async with CometClient(bootstrap, timeout=60) as client:
            await client.create_topic(topic, partitions, replication_factor, exist_ok=True)

    try:
        try:
            asyncio.run(create())
            results = run_phases(
                [replace(base, phase=p) for p in phases], processes, show_progress, broker
            )
        except CometError as exc:
            fail(str(exc))
    finally:
        if broker is not None:
            broker.stop()
            broker.cleanup()
    data = {
        "topic": topic,
        "settings": {
            "count": count,
            "size": size,
            "partitions": partitions,
            "replication_factor": replication_factor,
            "acks": acks,
            "compression": compression,
            "batch_records": batch_records,
            "api": api,
            "consume": "messages" if per_message else "batches",
            "produce": "send_batch" if send_batch else "send",
            "rate": rate if mode == "e2e" else None,
            "in_flight": in_flight,
            "processes": processes,
        },
        "results": [r.to_json() for r in results],
    }
    if output:
        with open(output, "w") as fh:
            json.dump(data, fh, indent=2)
    ctx.emit(data, results_table(results))


def results_table(results: list[BenchResult]) -> Table:
    """The final table: one row per phase."""
    table = Table(
        "phase",
        "records",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "client CPU s",
        "broker CPU s",
        "broker RSS MB",
    )
    for r in results:
        table.add_row(
            r.phase if r.processes == 1 else f"{r.phase} ({r.processes} processes)",
            f"{r.records:,}",
            f"{r.records_per_s:,.0f}",
            f"{r.mb_per_s:,.1f}",
            str(r.latency_ms.get("p50", "")),
            str(r.latency_ms.get("p99", "")),
            str(r.latency_ms.get("p99.9", "")),
            str(r.client_cpu_s),
            "" if r.broker_cpu_s is None else str(r.broker_cpu_s),
            "" if r.broker_peak_rss_mb is None else str(r.broker_peak_rss_mb),
        )
    return table


def register(cli: click.Group) -> None:
    """Attach the bench command to cometctl."""
    cli.add_command(bench)
