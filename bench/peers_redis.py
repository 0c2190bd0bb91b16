"""Redis Streams through redis-py: pipelined XADD, XREADGROUP reads, paced single XADDs.

    python -m bench.peers_redis --port PORT [--server-pid PID] [--scale 0.1]

Prints a JSON list of results on stdout (progress on stderr). Produce sends
XADD in non-transactional pipelines of `--pipeline` commands (one round
trip per pipeline; the replies are the acks). Consume is a consumer group
read with XREADGROUP ... NOACK COUNT `--read-count` (the group keeps its
position, like an auto-committing group member). redis-py uses the hiredis
parser when it is installed. Latency uses redis.asyncio, like the other
systems' asyncio clients. Every loop is bounded by a count and by
`--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from importlib.metadata import PackageNotFoundError, version

import redis
import redis.asyncio

from bench.common import (
    CpuMeter,
    Deadline,
    LatencyResult,
    PhaseResult,
    Workload,
    emit,
    paced,
    payloads,
    phase_result,
    progress,
    workloads,
)

SYSTEM = "redis"
FIELD = b"v"


def client_name() -> str:
    """redis-py's version, and hiredis's when present."""
    try:
        return f"redis-py {version('redis')} + hiredis {version('hiredis')}"
    except PackageNotFoundError:
        return f"redis-py {version('redis')}"


def produce(
    r: redis.Redis,
    key: str,
    workload: Workload,
    per_pipeline: int,
    max_seconds: float,
    server_pid: int | None,
) -> PhaseResult:
    """XADD every record, `per_pipeline` commands per round trip."""
    values = payloads(workload.size)
    deadline = Deadline(max_seconds)
    sent = 0
    cpu = CpuMeter(server_pid)
    t0 = time.perf_counter()
    while sent < workload.count and not deadline.expired():
        n = min(per_pipeline, workload.count - sent)
        pipe = r.pipeline(transaction=False)
        for i in range(sent, sent + n):
            pipe.xadd(key, {FIELD: values[i & 255]})
        pipe.execute()
        sent += n
    seconds = time.perf_counter() - t0
    stored = r.xlen(key)
    if stored != sent:
        raise RuntimeError(f"Redis stored {stored} of {sent} acknowledged XADDs")
    return phase_result(SYSTEM, workload, "produce", sent, seconds, cpu)


def consume(
    r: redis.Redis,
    key: str,
    workload: Workload,
    read_count: int,
    max_seconds: float,
    server_pid: int | None,
) -> PhaseResult:
    """Read the whole stream through a consumer group, `read_count` entries per call."""
    r.xgroup_create(key, "bench", id="0")
    deadline = Deadline(max_seconds)
    got = nbytes = calls = 0
    cpu = CpuMeter(server_pid)
    t0 = time.perf_counter()
    while got < workload.count and not deadline.expired():
        reply = r.xreadgroup(
            "bench",
            "c1",
            {key: ">"},
            count=min(read_count, workload.count - got),
            block=1000,
            noack=True,
        )
        calls += 1
        if not reply:
            continue
        entries = reply[0][1]
        for _id, fields in entries:
            nbytes += len(fields[FIELD])
        got += len(entries)
    seconds = time.perf_counter() - t0
    if nbytes != got * workload.size:
        raise RuntimeError(f"Redis consume: {nbytes} bytes for {got} entries")
    return phase_result(SYSTEM, workload, "consume", got, seconds, cpu, calls=calls)


async def latency(port: int, key: str, rate: int, seconds: float) -> LatencyResult:
    """XADD of one 100 B record every 1/rate s through redis.asyncio (a pool of connections)."""
    r = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    try:
        return await paced(
            SYSTEM, lambda value: r.xadd(key, {FIELD: value}), rate, seconds, call="XADD"
        )
    finally:
        await r.aclose()


def run(args: argparse.Namespace) -> list[PhaseResult | LatencyResult]:
    """Every workload, then the latency run, against the server on 127.0.0.1:`args.port`."""
    r = redis.Redis(host="127.0.0.1", port=args.port, socket_timeout=60)
    client = client_name()
    appendfsync = r.config_get("appendfsync").get("appendfsync")
    results: list[PhaseResult | LatencyResult] = []
    try:
        for workload in workloads(args.scale):
            key = f"bench:{workload.name}"
            r.delete(key)
            pub = produce(r, key, workload, args.pipeline, args.max_seconds, args.server_pid)
            pub.notes.update(client=client, pipeline=args.pipeline, appendfsync=appendfsync)
            progress(f"redis {workload.name} produce: {pub.records_per_s:,.0f} records/s")
            results.append(pub)
            cons = consume(r, key, workload, args.read_count, args.max_seconds, args.server_pid)
            cons.notes.update(client=client, read_count=args.read_count)
            progress(f"redis {workload.name} consume: {cons.records_per_s:,.0f} records/s")
            results.append(cons)
            r.delete(key)
        r.delete("bench:lat")
        lat = asyncio.run(latency(args.port, "bench:lat", args.rate, args.latency_seconds))
        lat.notes.update(client=client, appendfsync=appendfsync)
        progress(f"redis latency: p50 {lat.p50_ms} ms, p99 {lat.p99_ms} ms")
        results.append(lat)
        r.delete("bench:lat")
    finally:
        r.close()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--server-pid", type=int, default=None)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--pipeline", type=int, default=1000)
    ap.add_argument("--read-count", type=int, default=1000)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the Redis side of the comparison and print its JSON."""
    emit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
