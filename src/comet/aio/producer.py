"""TopicProducer (asyncio): batching, acknowledgements and retries for one topic.

send() frames the record into its partition's open batch (RecordAccumulator)
and returns a DeliveryHandle. A sender task drains sealed and lingering
batches, concatenates those of one partition into one ProduceBatch request
(up to max_request_bytes), keeps at most max_in_flight requests per
partition, and retries retriable failures with doubling backoff until the
batch's delivery_timeout, refreshing metadata in between.

Idempotent (enable_idempotence; by default with acks="all"): start() gets a producer id;
each batch is stamped with it, the epoch and its partition's next sequence
when it is first sent, and retries resend the same bytes. One batch per
request and one request in flight per partition keep sequences in order.
When a stamped batch finally fails its fate is unknown (it may be stored),
so the next batch is stamped with a new producer id, sequences from 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from comet.aio.accumulator import BufferFullError, RecordAccumulator
from comet.aio.client import CometClient, with_retries
from comet.aio.config import ProducerConfig
from comet.aio.delivery import (
    DeliveryCallback,
    DeliveryHandle,
    DeliveryHandles,
    ProducerBatch,
    RecordMetadata,
)
from comet.aio.events import EventLogger
from comet.errors import ClientClosedError, CometError, RequestTimeoutError, TopicNotFoundError
from comet.records import Compression
from comet.records.builder import Headers

log = EventLogger(__name__)

TOPIC_CREATE_ATTEMPTS = 10
SEQUENCE_MODULUS = 1 << 31  # sequences are int32 and wrap to 0, as in Kafka
# Batches per request of an idempotent producer: the broker remembers the last 5 batches
# of each producer (comet.broker.producer_state.CACHED_BATCHES, as Kafka), so a retried
# request of at most that many is recognised as a duplicate whole.
IDEMPOTENT_BATCHES_PER_REQUEST = 5


class TopicProducer:
    """Produces to one topic; create with a ProducerConfig, then `await start()`."""

    def __init__(self, config: ProducerConfig, *, client: CometClient | None = None) -> None:
        config.validate()
        self.config = config
        self.topic = config.topic
        self._own_client = client is None
        self._client = client or CometClient(config.bootstrap_addresses)
        self._acks: Any = -1 if config.acks == "all" else config.acks
        self._acc: RecordAccumulator | None = None
        self._serializes = config.key_serializer is not None or config.value_serializer is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._queues: dict[int, deque[ProducerBatch]] = {}
        self._in_flight: dict[int, int] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._closed = False
        self._idempotent = config.idempotent
        self._identity: tuple[int, int] | None = None  # (producer id, epoch); None: get a new one
        self._identity_lock = asyncio.Lock()
        self._sequences: dict[int, int] = {}  # next base sequence per partition

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> TopicProducer:
        """Create the topic if needed (retrying while brokers register) and start sending."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        cfg = self.config
        if cfg.create_topic:
            await with_retries(
                lambda: self._client.create_topic(
                    self.topic,
                    cfg.partitions,
                    cfg.replication_factor,
                    cfg.topic_config,
                    exist_ok=True,
                ),
                attempts=TOPIC_CREATE_ATTEMPTS,
                backoff=cfg.retry_backoff or 0.05,
                max_backoff=cfg.max_retry_backoff,
            )
        if self._idempotent:
            self._identity = await with_retries(
                self._client.init_producer_id,
                attempts=TOPIC_CREATE_ATTEMPTS,
                backoff=cfg.retry_backoff or 0.05,
                max_backoff=cfg.max_retry_backoff,
            )
        partitions = await self._partition_count()
        self._acc = RecordAccumulator(
            self.topic,
            partitions,
            batch_size=cfg.batch_size,
            max_batch_bytes=cfg.max_batch_bytes,
            buffer_size=cfg.buffer_size,
            compression=Compression.parse(cfg.compression),
            wake_sender=self._wake_threadsafe,
            on_space=self._space.set,
        )
        self._sender = asyncio.create_task(self._run_sender(), name=f"producer-{self.topic}")
        if cfg.metadata_refresh_interval > 0:
            self._refresher = asyncio.create_task(self._refresh_metadata_loop())
        return self

    async def __aenter__(self) -> TopicProducer:
        return await self.start() if self._acc is None else self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def partitions(self) -> int:
        """Partition count of the topic as last seen in metadata."""
        return self._accumulator().partitions

    async def _partition_count(self) -> int:
        meta = await with_retries(
            lambda: self._client.metadata([self.topic]),
            attempts=TOPIC_CREATE_ATTEMPTS,
            backoff=self.config.retry_backoff or 0.05,
        )
        return len(meta.topics[self.topic])

    async def _refresh_metadata_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.metadata_refresh_interval)
            try:
                count = await self._partition_count()
            except CometError as exc:
                log.warning("producer.metadata_refresh_failed", topic=self.topic, error=str(exc))
                continue
            acc = self._accumulator()
            if count > acc.partitions:
                log.info("producer.partitions_grew", topic=self.topic, partitions=count)
                acc.partitions = count

    async def flush(self) -> None:
        """Send everything buffered and wait until all of it is acknowledged or failed."""
        acc = self._accumulator()
        if not (acc.has_pending() or self._requests or any(self._queues.values())):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        self._wake.set()
        await waiter

    async def close(self) -> None:
        """Flush, stop the sender and release connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._acc is not None:
            await self.flush()
            self._acc.close()
        self._closing = True
        self._wake.set()
        for task in (self._sender, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._own_client:
            await self._client.close()

    def _accumulator(self) -> RecordAccumulator:
        if self._acc is None:
            if self._closed:
                raise ClientClosedError("the producer is closed")
            raise RuntimeError("call `await producer.start()` (or use `async with`) first")
        return self._acc

    # --- sending -------------------------------------------------------------

    def _serialize(self, key: Any, value: Any) -> tuple[bytes | None, bytes | None]:
        cfg = self.config
        if cfg.key_serializer is not None and key is not None:
            key = cfg.key_serializer(key)
        if cfg.value_serializer is not None and value is not None:
            value = cfg.value_serializer(value)
        return key, value

    def send_nowait(
        self,
        key: Any,
        value: Any,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> DeliveryHandle:
        """Buffer one record now; BufferFullError if there is no room."""
        if self._closed:
            raise ClientClosedError("send() after close(): the producer is closed")
        acc = self._acc or self._accumulator()
        if self._serializes:
            key, value = self._serialize(key, value)
        handle = acc.try_append(key, value, headers or (), partition)
        if handle is None:
            raise BufferFullError(f"producer buffer of {self.config.buffer_size} records is full")
        if on_delivery is not None:
            handle.add_done_callback(on_delivery)
        return handle

    async def send(
        self,
        key: Any,
        value: Any,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> DeliveryHandle:
        """Buffer one record, waiting up to send_timeout for room; await the handle for metadata."""
        if self._closed:
            raise ClientClosedError("send() after close(): the producer is closed")
        k, v = self._serialize(key, value)
        acc = self._accumulator()
        deadline = time.monotonic() + self.config.send_timeout
        while (handle := acc.try_append(k, v, headers or (), partition)) is None:
            await self._wait_for_space(deadline, "")
        if on_delivery is not None:
            handle.add_done_callback(on_delivery)
        return handle

    async def send_and_wait(
        self, key: Any, value: Any, headers: Headers | None = None, partition: int | None = None
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement."""
        return await (await self.send(key, value, headers, partition))

    async def send_batch(
        self, records: Iterable[tuple[Any, Any]], partition: int | None = None
    ) -> DeliveryHandles:
        """Send many (key, value) records; their handles in order (made when looked at).

        The fast path for callers that already hold many records: runs of
        records for one partition go into its batch in one C-level loop,
        with one timestamp for the call and no per-record object. Waits
        up to send_timeout for room while the buffer is full.
        """
        if self._closed:
            raise ClientClosedError("send() after close(): the producer is closed")
        acc = self._accumulator()
        cfg = self.config
        if cfg.key_serializer is not None or cfg.value_serializer is not None:
            records = [self._serialize(k, v) for k, v in records]
        elif not isinstance(records, Sequence):
            records = list(records)
        handles = DeliveryHandles()
        done = acc.append_many(records, 0, partition, None, handles)
        deadline = time.monotonic() + cfg.send_timeout
        while done < len(records):
            await self._wait_for_space(deadline, f" ({done} of {len(records)} records were sent)")
            done = acc.append_many(records, done, partition, None, handles)
        return handles

    async def _wait_for_space(self, deadline: float, progress: str) -> None:
        """Wait until the sender frees buffer room; BufferFullError once `deadline` passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            cfg = self.config
            raise BufferFullError(
                f"producer buffer of {cfg.buffer_size} records still full after "
                f"{cfg.send_timeout}s{progress}"
            )
        self._space.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._space.wait(), remaining)

    def _wake_threadsafe(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run_sender(self) -> None:
        acc = self._accumulator()
        linger = self.config.flush_interval
        while True:
            force = bool(self._flush_waiters) or self._closing
            batches, next_due = acc.drain(linger, force)
            for batch in batches:
                self._queues.setdefault(batch.partition, deque()).append(batch)
            self._dispatch()
            if self._flush_waiters and not (
                acc.has_pending() or self._requests or any(self._queues.values())
            ):
                waiters, self._flush_waiters = self._flush_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            self._wake.clear()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch(self) -> None:
        limit = self.config.max_request_bytes
        idempotent = self._idempotent
        # Idempotent: one request in flight per partition (a failed request is retried
        # before any later sequence is sent), of at most as many batches as the broker
        # remembers per producer, so a retried request is recognised whole.
        max_in_flight = 1 if idempotent else self.config.max_in_flight
        max_batches = IDEMPOTENT_BATCHES_PER_REQUEST if idempotent else 1 << 30
        for partition, queue in self._queues.items():
            while queue and self._in_flight.get(partition, 0) < max_in_flight:
                batches = [queue.popleft()]
                size = len(batches[0].data)
                while queue and len(batches) < max_batches and size + len(queue[0].data) <= limit:
                    size += len(queue[0].data)
                    batches.append(queue.popleft())
                self._in_flight[partition] = self._in_flight.get(partition, 0) + 1
                task = asyncio.create_task(self._send_request(partition, batches))
                self._requests.add(task)
                task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._requests.discard(task)
        self._wake.set()

    async def _send_request(self, partition: int, batches: Sequence[ProducerBatch]) -> None:
        cfg = self.config
        data = b""
        deadline = min(b.created for b in batches) + cfg.delivery_timeout
        backoff = cfg.retry_backoff
        try:
            while True:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                try:
                    if remaining_ms <= 0:
                        raise RequestTimeoutError(
                            f"{self.topic}/{partition}: not delivered within "
                            f"delivery_timeout={cfg.delivery_timeout}s"
                        )
                    if not data:
                        if self._idempotent:
                            await self._stamp(batches)
                        data = b"".join(b.data for b in batches)
                    result = await self._client.produce_batch(
                        self.topic,
                        partition,
                        data,
                        acks=self._acks,
                        timeout_ms=min(remaining_ms, 2**31 - 1),
                    )
                except CometError as exc:
                    # A broker may not know a just-created topic yet (metadata spreads
                    # through etcd watches): like Kafka, retry it as stale metadata.
                    retriable = exc.retriable or isinstance(exc, TopicNotFoundError)
                    if retriable and time.monotonic() + backoff < deadline:
                        log.debug(
                            "producer.retry", topic=self.topic, partition=partition, error=str(exc)
                        )
                        await asyncio.sleep(backoff)
                        backoff = min(max(backoff * 2, 0.01), cfg.max_retry_backoff)
                        with contextlib.suppress(CometError):
                            await self._client.leader_address(self.topic, partition, refresh=True)
                        continue
                    if self._idempotent:
                        self._forget_identity(batches[0])
                    for batch in batches:
                        batch.complete(-1, exc)
                    return
                offset = result.base_offset
                for batch in batches:
                    batch.complete(offset if offset >= 0 else -1)
                    if offset >= 0:
                        offset += batch.count
                return
        finally:
            self._in_flight[partition] -= 1

    async def _stamp(self, batches: Sequence[ProducerBatch]) -> None:
        """Stamp the batches with the producer id, epoch and consecutive sequences."""
        async with self._identity_lock:
            if self._identity is None:
                self._identity = await self._client.init_producer_id()
                self._sequences.clear()
                log.info(
                    "producer.new_producer_id", topic=self.topic, producer_id=self._identity[0]
                )
            producer_id, epoch = self._identity
            for batch in batches:
                sequence = self._sequences.get(batch.partition, 0)
                batch.set_producer_state(producer_id, epoch, sequence)
                self._sequences[batch.partition] = (sequence + batch.count) % SEQUENCE_MODULUS

    def _forget_identity(self, batch: ProducerBatch) -> None:
        """A stamped batch failed and may be stored: later batches need a new producer id."""
        if self._identity is not None and batch.producer_id == self._identity[0]:
            self._identity = None
