"""NATS JetStream through nats-py: async publish, pull-consumer reads, paced single publishes.

    python -m bench.peers_nats --url nats://127.0.0.1:PORT [--server-pid PID] [--scale 0.1]

Prints a JSON list of results on stdout (progress on stderr). Publish uses
`publish_async` (the client's pipelined publish: it writes without waiting
and resolves each ack future when the server's PubAck arrives), bounded by
`--max-pending` unacknowledged messages. Consume is a durable pull consumer
with AckPolicy NONE (the server keeps the consumer's position, like an
auto-committing group member) fetching `--fetch-batch` messages at a time.
Every loop is bounded by a count and by `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from importlib.metadata import version

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

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

SYSTEM = "nats"


async def recreate_stream(js: JetStreamContext, name: str, subject: str) -> None:
    """A fresh file-backed stream with one replica and no limits."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)
    await js.add_stream(
        StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE, num_replicas=1)
    )


async def produce(
    js: JetStreamContext,
    stream: str,
    subject: str,
    workload: Workload,
    max_seconds: float,
    server_pid: int | None,
) -> PhaseResult:
    """publish_async every record; the phase ends when the last PubAck has arrived."""
    values = payloads(workload.size)
    deadline = Deadline(max_seconds)
    cpu = CpuMeter(server_pid)
    t0 = time.perf_counter()
    publish_async = js.publish_async
    sent = 0
    for i in range(workload.count):
        await publish_async(subject, values[i & 255])
        sent += 1
        if i & 1023 == 0 and deadline.expired():
            break
    await asyncio.wait_for(js.publish_async_completed(), max(10.0, max_seconds))
    seconds = time.perf_counter() - t0
    stored = (await js.stream_info(stream)).state.messages
    if stored != sent:
        raise RuntimeError(f"JetStream stored {stored} of {sent} acknowledged publishes")
    return phase_result(SYSTEM, workload, "produce", sent, seconds, cpu)


async def consume(
    js: JetStreamContext,
    stream: str,
    subject: str,
    workload: Workload,
    fetch_batch: int,
    max_seconds: float,
    server_pid: int | None,
) -> PhaseResult:
    """Read every message of the stream through a durable pull consumer."""
    config = ConsumerConfig(
        durable_name="bench",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        max_waiting=512,
    )
    sub = await js.pull_subscribe(
        subject,
        durable="bench",
        stream=stream,
        config=config,
        pending_msgs_limit=4 * fetch_batch + 1000,
        pending_bytes_limit=256 << 20,
    )
    deadline = Deadline(max_seconds)
    got = nbytes = fetches = 0
    cpu = CpuMeter(server_pid)
    t0 = time.perf_counter()
    while got < workload.count and not deadline.expired():
        try:
            msgs = await sub.fetch(batch=min(fetch_batch, workload.count - got), timeout=5)
        except nats.errors.TimeoutError:
            continue
        fetches += 1
        for msg in msgs:
            nbytes += len(msg.data)
        got += len(msgs)
    seconds = time.perf_counter() - t0
    await sub.unsubscribe()
    if nbytes != got * workload.size:
        raise RuntimeError(f"NATS consume: {nbytes} bytes for {got} messages")
    return phase_result(SYSTEM, workload, "consume", got, seconds, cpu, fetches=fetches)


async def latency(js: JetStreamContext, subject: str, rate: int, seconds: float) -> LatencyResult:
    """`js.publish` (returns with the PubAck) of one 100 B record every 1/rate s."""
    return await paced(
        SYSTEM, lambda value: js.publish(subject, value), rate, seconds, call="js.publish"
    )


async def run(args: argparse.Namespace) -> list[PhaseResult | LatencyResult]:
    """Every workload, then the latency run, against the server at `args.url`."""
    nc = await nats.connect(
        args.url, pending_size=8 << 20, max_reconnect_attempts=2, connect_timeout=5
    )
    js = nc.jetstream(publish_async_max_pending=args.max_pending)
    client = f"nats-py {version('nats-py')}"
    results: list[PhaseResult | LatencyResult] = []
    try:
        for workload in workloads(args.scale):
            stream, subject = f"BENCH_{workload.name}", f"bench.{workload.name}"
            await recreate_stream(js, stream, subject)
            pub = await produce(js, stream, subject, workload, args.max_seconds, args.server_pid)
            pub.notes.update(client=client, max_pending=args.max_pending)
            progress(f"nats {workload.name} produce: {pub.records_per_s:,.0f} records/s")
            results.append(pub)
            cons = await consume(
                js,
                stream,
                subject,
                workload,
                args.fetch_batch,
                args.max_seconds,
                args.server_pid,
            )
            cons.notes.update(client=client, fetch_batch=args.fetch_batch, ack_policy="none")
            progress(f"nats {workload.name} consume: {cons.records_per_s:,.0f} records/s")
            results.append(cons)
            await js.delete_stream(stream)
        await recreate_stream(js, "BENCH_LAT", "bench.lat")
        lat = await latency(js, "bench.lat", args.rate, args.latency_seconds)
        lat.notes["client"] = client
        progress(f"nats latency: p50 {lat.p50_ms} ms, p99 {lat.p99_ms} ms")
        results.append(lat)
        await js.delete_stream("BENCH_LAT")
    finally:
        await nc.close()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--server-pid", type=int, default=None)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--max-pending", type=int, default=8000)
    ap.add_argument("--fetch-batch", type=int, default=1000)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the NATS side of the comparison and print its JSON."""
    emit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
