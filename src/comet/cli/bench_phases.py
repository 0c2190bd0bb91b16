"""The phases `cometctl bench` runs: produce, consume and end-to-end, raw or client API.

Produce (raw) frames RecordBatch v2 batches in this process (the client's
work) and keeps `in_flight` ProduceBatch calls outstanding; latency is
measured per batch, from send to acknowledgement. Consume fetches from
offset 0 and decodes every record. A `PhaseSpec` describes one phase of
one process, so a phase can also run in several processes at once
(`run_in_process`) and their results be merged (`merge`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.progress import Progress

from comet.aio import (
    BufferFullError,
    CometClient,
    Consumer,
    ConsumerConfig,
    Message,
    ProducerConfig,
    TopicProducer,
)
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
    processes: int = 1
    # kept for merging the results of several processes, left out of the JSON
    samples: list[float] = field(default_factory=list, repr=False)
    started_at: float = field(default=0.0, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The figures, without the raw latency samples."""
        data = asdict(self)
        del data["samples"], data["started_at"]
        return data

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
            samples=latencies,
            started_at=time.time() - seconds,
        )


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50": pick(0.50), "p99": pick(0.99), "p99.9": pick(0.999), "max": pick(1.0)}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_peak_rss_mb(pid: int) -> float:
    """Peak resident set size of process `pid` in MB."""
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
    partitions: list[int],
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
        t = asyncio.create_task(send(partitions[batch_no % len(partitions)], batch, n))
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
    partitions: list[int],
    max_bytes: int,
    progress: Progress | None,
) -> BenchResult:
    """Fetch and decode every record from offset 0 of `partitions` (`count` for progress).

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
    await asyncio.gather(*(drain(p) for p in partitions))
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
    # Commits every 10,000 records or 0.5 s (not the original's every 100 records, which
    # at 10,000 records/s is 100 commit RPCs a second competing with the ones measured).
    consumer_cfg = ConsumerConfig(
        bootstrap,
        group=f"e2e-{topic}",
        auto_offset_reset="latest",
        poll_interval=0.5,
        auto_commit_every=10_000,
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
        # Open loop on a 1 ms tick: each tick sends the records due by then, each
        # stamped as it is sent (a timer per record would cost more CPU in this
        # process than the records themselves at 10,000/s).
        tick = max(1.0 / rate, E2E_TICK_S)
        t0 = time.perf_counter()
        sent = 0
        while sent < count:
            due = min(count, int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                value = time.perf_counter_ns().to_bytes(8, "big") + pad
                try:
                    producer.send_nowait(None, value)
                except BufferFullError:
                    await producer.send(None, value)
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter(), tick))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        seconds = time.perf_counter() - t0
    return BenchResult.measure("e2e", len(latencies), size, seconds, latencies, cpu0)


E2E_TICK_S = 0.001


@dataclass
class PhaseSpec:
    """One phase of one process: what to run, against what, with which settings."""

    phase: str  # produce, consume or e2e
    api: str  # raw or client
    bootstrap: str
    topic: str
    count: int
    size: int
    partitions: list[int]  # raw API: the partitions this process works on
    topic_partitions: int
    batch_records: int = 2000
    in_flight: int = 8
    acks: str | int = 1
    compression: str | None = None
    fetch_max_bytes: int = 4 << 20
    per_message: bool = False
    send_batch: bool = False
    rate: int = 1000


async def run_phase(spec: PhaseSpec, progress: Progress | None) -> BenchResult:
    """Run one phase in this process."""
    if spec.phase == "e2e":
        return await run_e2e(
            spec.bootstrap,
            spec.topic,
            spec.rate,
            spec.count,
            spec.size,
            spec.topic_partitions,
            spec.acks,
        )
    if spec.api == "client":
        if spec.phase == "produce":
            return await run_client_produce(
                spec.bootstrap,
                spec.topic,
                spec.count,
                spec.size,
                spec.topic_partitions,
                spec.batch_records,
                spec.acks,
                spec.compression,
                progress,
                spec.send_batch,
            )
        return await run_client_consume(
            spec.bootstrap, spec.topic, spec.count, spec.size, progress, spec.per_message
        )
    async with CometClient(spec.bootstrap, timeout=60) as client:
        if spec.phase == "produce":
            return await run_produce(
                client,
                spec.topic,
                spec.count,
                spec.size,
                spec.partitions,
                spec.batch_records,
                spec.in_flight,
                spec.acks,
                Compression.parse(spec.compression),
                progress,
            )
        return await run_consume(
            client,
            spec.topic,
            spec.count,
            spec.size,
            spec.partitions,
            spec.fetch_max_bytes,
            progress,
        )


def run_in_process(spec: PhaseSpec) -> BenchResult:
    """Entry point of a worker process: run one phase without a progress bar."""
    return asyncio.run(run_phase(spec, None))


def merge(results: list[BenchResult]) -> BenchResult:
    """One result for a phase that ran in several processes at once.

    Records and CPU add up; the duration is from the first process's
    start to the last one's end; latency percentiles come from all samples.
    """
    first = results[0]
    records = sum(r.records for r in results)
    seconds = max(r.started_at + r.seconds for r in results) - min(r.started_at for r in results)
    samples = [s for r in results for s in r.samples]
    return BenchResult(
        first.phase,
        records,
        first.record_bytes,
        round(seconds, 3),
        round(records / seconds),
        round(records * first.record_bytes / seconds / 1e6, 3),
        _percentiles(samples),
        round(sum(r.client_cpu_s for r in results), 2),
        processes=len(results),
        samples=samples,
        started_at=min(r.started_at for r in results),
    )
