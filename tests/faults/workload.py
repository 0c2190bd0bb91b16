"""The workload: idempotent acks="all" producers, a consumer group, a commit monitor.

Each producer owns its keys (some on every partition) and sends at a fixed
rate, one record at a time, each value unique and carrying its key's next
sequence number (`history.encode_value`). Every send, acknowledgement
(partition and offset) and failure goes into the history. Consumers of one
group read the topic throughout with the client's batch iterator and
auto-commit; the monitor records the group's committed offsets as they move.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from functools import partial

from comet.aio import (
    BufferFullError,
    CometClient,
    Consumer,
    ConsumerConfig,
    ProducerConfig,
    RecordMetadata,
    TopicProducer,
    partition_for_key,
)
from comet.errors import CometError
from tests.faults.history import History, encode_value

MONITOR_INTERVAL_S = 0.5
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WorkloadConfig:
    """Shape of the workload."""

    topic: str = "chaos"
    partitions: int = 4
    replication_factor: int = 3
    min_insync_replicas: int = 2
    producers: int = 2
    keys_per_partition: int = 2  # per producer
    rate: float = 100.0  # records per second, per producer
    consumers: int = 2
    group: str = "chaos-readers"
    delivery_timeout_s: float = 30.0
    session_timeout_s: float = 6.0

    @property
    def topic_config(self) -> dict[str, str]:
        """The topic's config overrides."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}


def keys_for(producer: int, partitions: int, per_partition: int) -> list[str]:
    """Keys of one producer: `per_partition` on each partition (the client's CRC-32 rule)."""
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for i in range(1000 * partitions * per_partition):
        key = f"p{producer}k{i}"
        chosen = by_partition[partition_for_key(key.encode(), partitions)]
        if len(chosen) < per_partition:
            chosen.append(key)
        if all(len(v) == per_partition for v in by_partition.values()):
            break
    return [k for p in range(partitions) for k in by_partition[p]]


class Workload:
    """Producers, consumers and the commit monitor of one run."""

    def __init__(self, config: WorkloadConfig, bootstrap: str, history: History) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.history = history
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.refused = 0
        self._sending = asyncio.Event()
        self._producers: list[TopicProducer] = []
        self._producer_tasks: list[asyncio.Task[None]] = []
        self._consumer_tasks: list[asyncio.Task[None]] = []
        self._monitor_task: asyncio.Task[None] | None = None
        self.committed: dict[int, int] = {}
        self._admin = CometClient(bootstrap, timeout=3)

    @property
    def unresolved(self) -> int:
        """Records handed to a producer and neither acknowledged nor failed yet."""
        return self.sent - self.acked - self.failed

    async def start(self) -> None:
        """Start the producers (the topic must exist), the consumers and the monitor."""
        cfg = self.config
        for _ in range(cfg.producers):
            producer = TopicProducer(
                ProducerConfig(
                    self.bootstrap,
                    topic=cfg.topic,
                    acks="all",
                    create_topic=False,
                    buffer_size=100_000,
                    flush_interval=0.05,
                    delivery_timeout=cfg.delivery_timeout_s,
                    max_retry_backoff=1.0,
                    metadata_refresh_interval=5.0,
                )
            )
            await producer.start()
            self._producers.append(producer)
        self._sending.set()
        for index, producer in enumerate(self._producers):
            self._producer_tasks.append(
                asyncio.create_task(self._produce(index, producer), name=f"producer-{index}")
            )
        for index in range(cfg.consumers):
            self._consumer_tasks.append(
                asyncio.create_task(self._consume(index), name=f"consumer-{index}")
            )
        self._monitor_task = asyncio.create_task(self._monitor(), name="commit-monitor")

    async def stop_producing(self, timeout_s: float) -> None:
        """Stop sending, then wait (bounded) until every record sent is acked or failed."""
        self._sending.clear()
        for task in self._producer_tasks:
            await task
        deadline = time.monotonic() + timeout_s
        for producer in self._producers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(producer.flush(), max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(producer.close(), max(0.1, deadline - time.monotonic()))

    async def stop(self) -> None:
        """Stop consumers (they commit and leave) and the monitor."""
        for task in [*self._consumer_tasks, self._monitor_task]:
            if task is not None:
                task.cancel()
        for task in [*self._consumer_tasks, self._monitor_task]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.read_committed(), 5)
        await self._admin.close()

    # --- producing ------------------------------------------------------------

    async def _produce(self, index: int, producer: TopicProducer) -> None:
        cfg = self.config
        keys = keys_for(index, cfg.partitions, cfg.keys_per_partition)
        sequences = dict.fromkeys(keys, 0)
        interval = 1.0 / cfg.rate
        loop = asyncio.get_running_loop()
        due = loop.time()
        n = 0
        while self._sending.is_set():
            key = keys[n % len(keys)]
            record_id = f"p{index}.{n}"
            n += 1
            value = encode_value(record_id, key, sequences[key])
            try:
                handle = producer.send_nowait(key.encode(), value)
            except BufferFullError:
                self.refused += 1
                self.history.record("refused", id=record_id)
            else:
                self.history.record("send", id=record_id, k=key, s=sequences[key])
                sequences[key] += 1
                self.sent += 1
                handle.add_done_callback(partial(self._delivered, record_id))
            due += interval
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the workload's pace
            elif wait < -1.0:
                due = loop.time()  # fell behind (a stalled loop): do not burst to catch up

    def _delivered(
        self, record_id: str, meta: RecordMetadata | None, error: BaseException | None
    ) -> None:
        if error is not None or meta is None:
            self.failed += 1
            self.history.record("fail", id=record_id, error=f"{type(error).__name__}: {error}")
        else:
            self.acked += 1
            self.history.record("ack", id=record_id, p=meta.partition, o=meta.offset)

    # --- consuming ------------------------------------------------------------

    async def _consume(self, index: int) -> None:
        cfg = self.config
        consumer = Consumer(
            ConsumerConfig(
                self.bootstrap,
                group=cfg.group,
                session_timeout=cfg.session_timeout_s,
                max_backoff=1.0,
                client_id=f"chaos-consumer-{index}",
            )
        )
        try:
            async for batch in consumer.batches(cfg.topic):
                recs = [[int(r.offset), bytes(r.value or b"").decode()] for r in batch.records]
                if recs:
                    self.history.record("consume", c=index, p=batch.partition, recs=recs)
        finally:
            with contextlib.suppress(TimeoutError):  # it commits and leaves: bounded
                await asyncio.wait_for(consumer.close(), CLOSE_TIMEOUT_S)

    async def _monitor(self) -> None:
        while True:
            with contextlib.suppress(CometError, TimeoutError):
                await asyncio.wait_for(self.read_committed(), 5)
            await asyncio.sleep(MONITOR_INTERVAL_S)  # the monitor's sampling period

    async def read_committed(self) -> dict[int, int]:
        """Read the group's committed offsets; record those that changed."""
        cfg = self.config
        offsets = await self._admin.fetch_offsets(
            cfg.group, {cfg.topic: list(range(cfg.partitions))}
        )
        for (_, partition), offset in sorted(offsets.items()):
            if offset >= 0 and self.committed.get(partition) != offset:
                self.committed[partition] = offset
                self.history.record("committed", p=partition, o=offset)
        return dict(self.committed)
