"""`cometctl bench produce|consume`: throughput and latency through real gRPC.

Produce frames RecordBatch v2 batches in this process (the client's work)
and keeps `--in-flight` ProduceBatch calls outstanding; latency is measured
per batch, from send to acknowledgement. Consume fetches from offset 0 and
decodes every record. With --spawn-broker a broker is started on loopback in
a temporary data directory and its CPU time and peak RSS are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from comet.aio import (
    BufferFullError,
    CometClient,
    Consumer,
    ConsumerConfig,
    Message,
    ProducerConfig,
    TopicProducer,
)
from comet.cli.ctl import CtlContext, fail, with_ctx
from comet.cli.local_broker import LocalBroker
from comet.errors import CometError
from comet.records import Compression, RecordBatchBuilder, RecordSet

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class BenchResult:
    """Figures of one benchmark phase."""

    phase: str
    records: int
    record_bytes: int
    seconds: float
    records_per_s: float = 0.0
    mb_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    broker_cpu_s: float | None = None
    broker_peak_rss_mb: float | None = None

    @classmethod
    def measure(
        cls,
        phase: str,
        records: int,
        size: int,
        seconds: float,
        latencies: list[float],
        cpu_start: float,
    ) -> BenchResult:
        """Figures of a phase that moved `records` in `seconds` since process CPU `cpu_start`."""
        return cls(
            phase,
            records,
            size,
            round(seconds, 3),
            round(records / seconds),
            round(records * size / seconds / 1e6, 3),
            _percentiles(latencies),
            round(time.process_time() - cpu_start, 2),
        )


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50": pick(0.50), "p99": pick(0.99), "p99.9": pick(0.999), "max": pick(1.0)}


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _proc_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_produce(
    client: CometClient,
    topic: str,
    count: int,
    size: int,
    partitions: int,
    batch_records: int,
    in_flight: int,
    acks: str,
    compression: Compression,
    progress: Progress | None,
) -> BenchResult:
    """Produce `count` records of `size` bytes; return throughput and batch latency."""
    rng = random.Random(42)
    values = [rng.randbytes(size) for _ in range(256)]
    latencies: list[float] = []
    task = progress.add_task("produce", total=count) if progress else None
    sem = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async def send(partition: int, batch: bytes, n: int) -> None:
        started = time.perf_counter()
        try:
            await client.produce_batch(topic, partition, batch, acks=acks)  # type: ignore[arg-type]
        except CometError as exc:
            errors.append(exc)
        finally:
            latencies.append(time.perf_counter() - started)
            sem.release()
            if progress and task is not None:
                progress.advance(task, n)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    sent = 0
    batch_no = 0
    while sent < count and not errors:
        n = min(batch_records, count - sent)
        builder = RecordBatchBuilder(compression, max_bytes=1 << 30)
        ts = int(time.time() * 1000)
        for i in range(n):
            builder.append(None, values[(sent + i) & 255], ts)
        batch = builder.build()
        await sem.acquire()
        t = asyncio.create_task(send(batch_no % partitions, batch, n))
        pending.add(t)
        t.add_done_callback(pending.discard)
        sent += n
        batch_no += 1
    if pending:
        await asyncio.gather(*pending)
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - t0
    return BenchResult.measure("produce", count, size, seconds, latencies, cpu0)


async def run_consume(
    client: CometClient,
    topic: str,
    count: int,
    size: int,
    partitions: int,
    max_bytes: int,
    progress: Progress | None,
) -> BenchResult:
    """Fetch and decode `count` records from offset 0 of every partition.

    The next fetch of a partition is in flight while the last one is
    decoded; every record's value is read (through RecordSet's lazy views).
    """
    task = progress.add_task("consume", total=count) if progress else None
    seen = 0

    async def drain(partition: int) -> None:
        nonlocal seen
        end = await client.list_offsets(topic, partition)
        offset = 0
        pending = asyncio.ensure_future(client.fetch(topic, partition, 0, max_bytes=max_bytes))
        while offset < end:
            result = await pending
            sets = RecordSet.split(result.records, offset)
            if sets and sets[-1].next_offset < end:
                at = sets[-1].next_offset
                pending = asyncio.ensure_future(
                    client.fetch(topic, partition, at, max_bytes=max_bytes)
                )
            n = 0
            for records in sets:
                for record in records:
                    n += record.value is not None
                offset = records.next_offset
            seen += n
            if progress and task is not None:
                progress.advance(task, n)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(drain(p) for p in range(partitions)))
    seconds = time.perf_counter() - t0
    return BenchResult.measure("consume", seen, size, seconds, [], cpu0)


async def run_client_produce(
    bootstrap: str,
    topic: str,
    count: int,
    size: int,
    partitions: int,
    batch_records: int,
    acks: str | int,
    compression: str | None,
    progress: Progress | None,
    send_batch: bool = False,
) -> BenchResult:
    """Produce through the public TopicProducer, sampling delivery latency.

    Per-record send_nowait(), or with `send_batch` send_batch() calls of
    `batch_records` records (one list of tuples, built once, sent again
    and again: the caller's cost of building it is not measured).
    """
    rng = random.Random(42)
    values = [rng.randbytes(size) for _ in range(256)]
    task = progress.add_task("produce (TopicProducer)", total=count) if progress else None
    latencies: list[float] = []
    cfg = ProducerConfig(
        bootstrap,
        topic=topic,
        partitions=partitions,
        acks=acks,  # type: ignore[arg-type]
        compression=compression,
        batch_size=batch_records,
        buffer_size=batch_records * 8,
        flush_interval=0.005,
        max_in_flight=2,
    )
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with TopicProducer(cfg) as producer:
        if send_batch:
            chunk = [(None, values[i & 255]) for i in range(batch_records)]
            sent = 0
            while sent < count:
                records = chunk if count - sent >= batch_records else chunk[: count - sent]
                started = time.perf_counter()
                handles = await producer.send_batch(records)
                handles[0].add_done_callback(
                    lambda _m, _e, s=started: latencies.append(time.perf_counter() - s)
                )
                sent += len(records)
                if progress and task is not None:
                    progress.update(task, completed=sent)
            await producer.flush()
        else:
            send_nowait = producer.send_nowait
            for i in range(count):
                try:
                    handle = send_nowait(None, values[i & 255])
                except BufferFullError:
                    handle = await producer.send(None, values[i & 255])
                if i % batch_records == 0:
                    started = time.perf_counter()
                    handle.add_done_callback(
                        lambda _m, _e, s=started: latencies.append(time.perf_counter() - s)
                    )
                    if progress and task is not None:
                        progress.update(task, completed=i)
                    await asyncio.sleep(0)
            await producer.flush()
    seconds = time.perf_counter() - t0
    return BenchResult.measure("produce", count, size, seconds, latencies, cpu0)


async def run_client_consume(
    bootstrap: str,
    topic: str,
    count: int,
    size: int,
    progress: Progress | None,
    per_message: bool = False,
) -> BenchResult:
    """Consume `count` records through the public group Consumer (batches, or per message).

    Either way every record is decoded and its value read.
    """
    task = progress.add_task("consume (Consumer)", total=count) if progress else None
    cfg = ConsumerConfig(
        bootstrap,
        group=f"bench-{topic}",
        auto_offset_reset="earliest",
        max_poll_records=10_000,
        channel_buffer=50_000,
        fetch_max_bytes=4 << 20,
        auto_commit_every=100_000,
    )
    seen = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with Consumer(cfg) as consumer:
        if per_message:
            async for _message in consumer.messages(topic):
                seen += 1
                if seen % 10_000 == 0 and progress and task is not None:
                    progress.update(task, completed=seen)
                if seen >= count:
                    break
        else:
            async for batch in consumer.batches(topic):
                for record in batch.records:  # decode every record and read its value
                    seen += record.value is not None
                if progress and task is not None:
                    progress.update(task, completed=seen)
                if seen >= count:
                    break
    seconds = time.perf_counter() - t0
    return BenchResult.measure("consume", seen, size, seconds, [], cpu0)


async def run_e2e(
    bootstrap: str, topic: str, rate: int, count: int, size: int, partitions: int, acks: str | int
) -> BenchResult:
    """Send `count` records at `rate`/s through TopicProducer; latency until the Consumer has it."""
    pad = b"x" * max(0, size - 8)
    latencies: list[float] = []
    done = asyncio.Event()
    producer_cfg = ProducerConfig(
        bootstrap,
        topic=topic,
        partitions=partitions,
        acks=acks,
        flush_interval=0.0005,  # type: ignore[arg-type]
    )
    consumer_cfg = ConsumerConfig(
        bootstrap, group=f"e2e-{topic}", auto_offset_reset="latest", poll_interval=0.5
    )
    cpu0 = time.process_time()
    async with TopicProducer(producer_cfg) as producer, Consumer(consumer_cfg) as consumer:

        async def on_message(message: Message) -> None:
            sent_ns = int.from_bytes(message.value[:8], "big")
            latencies.append((time.perf_counter_ns() - sent_ns) / 1e9)
            if len(latencies) >= count:
                done.set()

        await consumer.subscribe(topic, on_message)
        await consumer.wait_for_assignment(30)
        interval = 1.0 / rate
        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(None, time.perf_counter_ns().to_bytes(8, "big") + pad)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        seconds = time.perf_counter() - t0
    return BenchResult.measure("e2e", len(latencies), size, seconds, latencies, cpu0)


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
    fetch_max_bytes: int,
    topic: str | None,
    spawn_broker: bool,
    broker_arg: tuple[str, ...],
    output: str | None,
) -> None:
    """Measure produce and consume throughput (MODE: produce, consume or both)."""
    topic = topic or f"bench-{int(time.time())}-{os.getpid()}"
    codec = Compression.parse(None if compression == "none" else compression)
    acks_arg: str | int = "all" if acks == "all" else int(acks)
    broker = LocalBroker(extra_args=list(broker_arg)) if spawn_broker else None
    bootstrap = ctx.bootstrap
    if broker is not None:
        broker.start()
        bootstrap = broker.address
    show_progress = not ctx.as_json and Console(stderr=True).is_terminal
    results: list[BenchResult] = []
    try:
        cpu_before = _proc_cpu_s(broker.pid) if broker else 0.0

        async def main() -> None:
            async with CometClient(bootstrap, timeout=60) as client:
                await client.create_topic(topic, partitions, replication_factor, exist_ok=True)
                with Progress(console=Console(stderr=True), disable=not show_progress) as progress:
                    codec_name = None if compression == "none" else compression
                    if mode == "e2e":
                        results.append(
                            await run_e2e(bootstrap, topic, rate, count, size, partitions, acks_arg)
                        )
                        return
                    if mode in ("produce", "both"):
                        if api == "client":
                            result = await run_client_produce(
                                bootstrap,
                                topic,
                                count,
                                size,
                                partitions,
                                batch_records,
                                acks_arg,
                                codec_name,
                                progress,
                                send_batch,
                            )
                        else:
                            result = await run_produce(
                                client,
                                topic,
                                count,
                                size,
                                partitions,
                                batch_records,
                                in_flight,
                                acks_arg,  # type: ignore[arg-type]
                                codec,
                                progress,
                            )
                        results.append(result)
                    if mode in ("consume", "both"):
                        if api == "client":
                            result = await run_client_consume(
                                bootstrap, topic, count, size, progress, per_message
                            )
                        else:
                            result = await run_consume(
                                client, topic, count, size, partitions, fetch_max_bytes, progress
                            )
                        results.append(result)

        try:
            asyncio.run(main())
        except CometError as exc:
            fail(str(exc))
        if broker is not None:
            cpu = round(_proc_cpu_s(broker.pid) - cpu_before, 2)
            rss = round(_proc_peak_rss_mb(broker.pid), 1)
            for r in results:
                r.broker_cpu_s = cpu if len(results) == 1 else None
                r.broker_peak_rss_mb = rss
            if len(results) > 1:
                results[-1].broker_cpu_s = cpu
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
        },
        "results": [asdict(r) for r in results],
    }
    if output:
        with open(output, "w") as fh:
            json.dump(data, fh, indent=2)
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
            r.phase,
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
    ctx.emit(data, table)


def register(cli: click.Group) -> None:
    """Attach the bench command to cometctl."""
    cli.add_command(bench)
