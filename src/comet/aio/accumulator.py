"""RecordAccumulator: open batches per partition and the queue of sealed ones.

Thread-safe (one lock), because the synchronous producer appends from the
caller's thread while the sender drains on the client loop. Per record it
does a dictionary lookup and one C-level append; the sender is woken once
per batch, never per record.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice

from comet.aio.delivery import DeliveryHandle, DeliveryHandles, ProducerBatch
from comet.errors import ClientClosedError, CometError
from comet.records import Compression, RecordBatchBuilder
from comet.records.builder import Headers

_NO_HEADERS: list[tuple[str, bytes | None]] = []


class BufferFullError(CometError):
    """send() waited send_timeout for room in the producer's buffer."""

    retriable = True


def partition_for_key(key: bytes, partitions: int) -> int:
    """The original Comet partitioner: CRC-32 (IEEE) of the key modulo the count."""
    return zlib.crc32(key) % partitions


class RecordAccumulator:
    """Groups records into per-partition batches and bounds what is buffered."""

    def __init__(
        self,
        topic: str,
        partitions: int,
        *,
        batch_size: int,
        max_batch_bytes: int,
        buffer_size: int,
        compression: Compression,
        wake_sender: Callable[[], None],
        on_space: Callable[[], None],
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.buffer_size = buffer_size
        self.compression = compression
        self._wake_sender = wake_sender
        self._on_space = on_space
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._open: dict[int, ProducerBatch] = {}
        self._ready: deque[ProducerBatch] = deque()
        self._buffered = 0
        self._closed = False
        self._sticky = itertools.count()
        self._sticky_partition = 0

    @property
    def buffered(self) -> int:
        """Records accepted but not yet handed to the sender."""
        return self._buffered

    def close(self) -> None:
        """Refuse further appends and wake blocked senders."""
        with self._lock:
            self._closed = True
            self._space.notify_all()

    def try_append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None,
        timestamp_ms: int | None = None,
    ) -> DeliveryHandle | None:
        """Add a record, or return None when the buffer is full."""
        with self._lock:
            if self._closed:
                raise ClientClosedError("send() after close(): the producer is closed")
            if self._buffered >= self.buffer_size:
                return None
            return self._append_locked(key, value, headers, partition, timestamp_ms)

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None,
        timeout: float,
        timestamp_ms: int | None = None,
    ) -> DeliveryHandle:
        """Add a record, blocking this thread up to `timeout` while the buffer is full."""
        lock = self._lock
        lock.acquire()
        try:
            if self._closed or self._buffered >= self.buffer_size:
                self._wait_for_room_locked(timeout)
            return self._append_locked(key, value, headers, partition, timestamp_ms)
        finally:
            lock.release()

    def append_many(
        self,
        records: Sequence[tuple[bytes | None, bytes | None]],
        start: int,
        partition: int | None,
        timeout: float | None,
        handles: DeliveryHandles,
    ) -> int:
        """Add records[start:] under one lock, recording their handles in `handles`.

        With a timeout, waits for room like append(); with None, stops when
        the buffer is full. Returns the index of the first record not added
        (len(records) when all were). Runs of records bound for one
        partition go straight into its open batch through the C builder,
        with one timestamp and no per-record Python object.
        """
        if partition is not None and not 0 <= partition < self.partitions:
            raise ValueError(
                f"partition: topic {self.topic!r} has partitions 0..{self.partitions - 1}, "
                f"not {partition}"
            )
        n = len(records)
        i = start
        lock = self._lock
        lock.acquire()
        try:
            ts = time.time_ns() // 1_000_000
            count = self.partitions
            crc32 = zlib.crc32
            while i < n:
                if self._closed or self._buffered >= self.buffer_size:
                    if timeout is None:
                        if self._closed:
                            raise ClientClosedError("send() after close(): the producer is closed")
                        break
                    self._wait_for_room_locked(timeout)
                p = partition
                if p is None:
                    key = records[i][0]
                    p = crc32(key) % count if key else self._sticky_partition
                sticky = self._sticky_partition
                batch = self._open.get(p) or self._new_batch(p)
                first = len(batch.timestamps)
                stop = i + min(self.batch_size - first, self.buffer_size - self._buffered, n - i)
                add = batch.add
                index = first
                full = False
                for key, value in islice(records, i, stop):
                    if partition is None and (crc32(key) % count if key else sticky) != p:
                        break
                    if add(index, ts, key, value, _NO_HEADERS) is None:
                        full = True
                        break
                    index += 1
                added = index - first
                batch.timestamps.extend([ts] * added)
                self._buffered += added
                handles.add_span(batch, first, added)
                i += added
                if full or index >= self.batch_size:
                    self._seal_locked(p, batch)
            return i
        finally:
            lock.release()

    def _wait_for_room_locked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._closed:
                raise ClientClosedError("send() after close(): the producer is closed")
            if self._buffered < self.buffer_size:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BufferFullError(
                    f"producer buffer of {self.buffer_size} records still full after {timeout}s"
                )
            self._space.wait(remaining)

    def _append_locked(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None,
        timestamp_ms: int | None,
    ) -> DeliveryHandle:
        # The per-record hot path: keep it to dictionary lookups and one C call.
        if partition is None:
            partition = zlib.crc32(key) % self.partitions if key else self._sticky_partition
        elif not 0 <= partition < self.partitions:
            raise ValueError(
                f"partition: topic {self.topic!r} has partitions 0..{self.partitions - 1}, "
                f"not {partition}"
            )
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        hdrs = list(headers) if headers else _NO_HEADERS
        batch = self._open.get(partition) or self._new_batch(partition)
        index = len(batch.timestamps)
        if batch.add(index, ts, key, value, hdrs) is None:
            self._seal_locked(partition, batch)
            batch = self._new_batch(partition)
            index = 0
            batch.add(0, ts, key, value, hdrs)
        batch.timestamps.append(ts)
        self._buffered += 1
        if index + 1 >= self.batch_size:
            self._seal_locked(partition, batch)
        return DeliveryHandle(batch, index)

    def _new_batch(self, partition: int) -> ProducerBatch:
        builder = RecordBatchBuilder(self.compression, self.max_batch_bytes)
        batch = ProducerBatch(self.topic, partition, builder, time.monotonic())
        self._open[partition] = batch
        self._wake_sender()
        return batch

    def _seal_locked(self, partition: int, batch: ProducerBatch) -> None:
        del self._open[partition]
        batch.seal()
        self._ready.append(batch)
        if partition == self._sticky_partition:
            self._sticky_partition = next(self._sticky) % self.partitions
        self._wake_sender()

    def drain(self, linger: float, force: bool = False) -> tuple[list[ProducerBatch], float | None]:
        """Seal batches older than `linger` (all with force) and take every sealed batch.

        Returns the batches and the monotonic time the next open batch is due,
        or None when no batch is open.
        """
        now = time.monotonic()
        with self._lock:
            next_due = None
            for partition, batch in list(self._open.items()):
                due = batch.created + linger
                if force or due <= now:
                    self._seal_locked(partition, batch)
                elif next_due is None or due < next_due:
                    next_due = due
            batches = list(self._ready)
            self._ready.clear()
            if batches:
                self._buffered -= sum(b.count for b in batches)
                self._space.notify_all()
        if batches:
            self._on_space()
        return batches, next_due

    def has_pending(self) -> bool:
        """True while any record is open or sealed but not drained."""
        with self._lock:
            return bool(self._open or self._ready)
