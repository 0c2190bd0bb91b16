"""Delivery reports: one shared completion per batch, a light handle per record.

Creating a future per record would cost more than the whole per-record
budget, so records of one batch share a `ProducerBatch` completion and each
send() returns a `DeliveryHandle` (two slots) pointing into it.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, NamedTuple, overload

import crc32c

from comet.records import RecordBatchBuilder
from comet.records.batch import CRC_START

# RecordBatch v2 (layout in comet.records.batch): CRC at byte 17 over bytes 21..end;
# producer_id, producer_epoch and base_sequence at bytes 43..56, inside the CRC.
_CRC = struct.Struct(">I")
_CRC_AT = 17
_PRODUCER_STATE = struct.Struct(">qhi")
_PRODUCER_STATE_AT = 43


class RecordMetadata(NamedTuple):
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (the record's CreateTime)


DeliveryCallback = Callable[[RecordMetadata | None, BaseException | None], Any]

# Guards callback/future registration against a completion on another thread.
_registration = threading.Lock()


class ProducerBatch:
    """Records of one partition that travel, and complete, together."""

    __slots__ = (
        "_callbacks",
        "_done",
        "_event",
        "_futures",
        "add",
        "attempts",
        "base_offset",
        "builder",
        "created",
        "data",
        "error",
        "partition",
        "producer_id",
        "sequence",
        "timestamps",
        "topic",
    )

    def __init__(
        self, topic: str, partition: int, builder: RecordBatchBuilder, created: float
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.builder: RecordBatchBuilder | None = builder
        # The C builder's append(offset_delta, ts, key, value, headers); None when full.
        self.add = builder.raw_append
        self.data = b""
        self.created = created
        self.timestamps: list[int] = []
        self.base_offset = -1
        self.error: BaseException | None = None
        self.attempts = 0
        self.producer_id = -1
        self.sequence = -1  # base sequence once stamped for an idempotent producer
        self._done = False
        self._event: threading.Event | None = None
        self._futures: list[asyncio.Future[None]] = []
        self._callbacks: list[tuple[int, DeliveryCallback]] = []

    @property
    def count(self) -> int:
        """Records in the batch."""
        return len(self.timestamps)

    def seal(self) -> None:
        """Finish framing; no more records can be added."""
        if self.builder is not None:
            self.data = self.builder.build()
            self.builder = None

    def set_producer_state(self, producer_id: int, producer_epoch: int, sequence: int) -> None:
        """Stamp the sealed batch's producer id, epoch and base sequence (the CRC is redone)."""
        buf = bytearray(self.data)
        _PRODUCER_STATE.pack_into(buf, _PRODUCER_STATE_AT, producer_id, producer_epoch, sequence)
        _CRC.pack_into(buf, _CRC_AT, crc32c.crc32c(memoryview(buf)[CRC_START:]))
        self.data = bytes(buf)
        self.producer_id = producer_id
        self.sequence = sequence

    # --- completion (called on the producer's loop) -------------------------

    def complete(self, base_offset: int, error: BaseException | None = None) -> None:
        """Record the outcome and wake every waiter and callback of the batch."""
        self.base_offset = base_offset
        self.error = error
        self.data = b""
        with _registration:
            self._done = True
            futures, self._futures = self._futures, []
            callbacks, self._callbacks = self._callbacks, []
        if self._event is not None:
            self._event.set()
        for fut in futures:
            fut.get_loop().call_soon_threadsafe(_resolve, fut)
        for index, callback in callbacks:
            self._run_callback(index, callback)

    def done(self) -> bool:
        """True once the batch was acknowledged or failed."""
        return self._done

    def metadata(self, index: int) -> RecordMetadata:
        """Metadata of record `index` (offset -1 when acks=0)."""
        offset = self.base_offset + index if self.base_offset >= 0 else -1
        return RecordMetadata(self.topic, self.partition, offset, self.timestamps[index])

    def wait(self, timeout: float | None) -> bool:
        """Block the calling thread until done; False on timeout."""
        if self._done:
            return True
        if self._event is None:
            self._event = threading.Event()
            if self._done:
                return True
        return self._event.wait(timeout)

    def future(self) -> asyncio.Future[None]:
        """An asyncio future on the running loop, resolved when the batch completes."""
        fut = asyncio.get_running_loop().create_future()
        with _registration:
            if not self._done:
                self._futures.append(fut)
                return fut
        fut.set_result(None)
        return fut

    def add_callback(self, index: int, callback: DeliveryCallback) -> None:
        """Call `callback(metadata, error)` for record `index` once done."""
        with _registration:
            if not self._done:
                self._callbacks.append((index, callback))
                return
        self._run_callback(index, callback)

    def _run_callback(self, index: int, callback: DeliveryCallback) -> None:
        if self.error is None:
            callback(self.metadata(index), None)
        else:
            callback(None, self.error)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class DeliveryHandle:
    """The outcome of one send(): wait for it, poll it, await it or attach a callback."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: ProducerBatch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        """True once the record was acknowledged or failed."""
        return self._batch.done()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Block until delivered and return its metadata; raise its error or TimeoutError."""
        if not self._batch.wait(timeout):
            raise TimeoutError(f"record not delivered within {timeout}s")
        if self._batch.error is not None:
            raise self._batch.error
        return self._batch.metadata(self._index)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Block until done; the delivery error or None."""
        if not self._batch.wait(timeout):
            raise TimeoutError(f"record not delivered within {timeout}s")
        return self._batch.error

    def add_done_callback(self, callback: DeliveryCallback) -> None:
        """Call `callback(metadata, error)` once done (on the producer's loop thread)."""
        self._batch.add_callback(self._index, callback)

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        yield from self._batch.future().__await__()
        if self._batch.error is not None:
            raise self._batch.error
        return self._batch.metadata(self._index)


class DeliveryHandles(Sequence[DeliveryHandle]):
    """The handles of one send_batch(), in order, kept as ranges of batches.

    A handle object is made only for the records that are looked at, so
    sending a large list costs nothing per record here. `await
    handles.wait()` waits for all of them and raises the first error.
    """

    __slots__ = ("_count", "_spans", "_starts")

    def __init__(self) -> None:
        self._spans: list[tuple[ProducerBatch, int, int]] = []
        self._starts: list[int] = []
        self._count = 0

    def add_span(self, batch: ProducerBatch, first_index: int, count: int) -> None:
        """Records first_index..first_index+count-1 of `batch` are the next `count` handles."""
        if count > 0:
            self._starts.append(self._count)
            self._spans.append((batch, first_index, count))
            self._count += count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> DeliveryHandle: ...
    @overload
    def __getitem__(self, index: slice) -> list[DeliveryHandle]: ...
    def __getitem__(self, index: int | slice) -> DeliveryHandle | list[DeliveryHandle]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("delivery handle index out of range")
        span = bisect_right(self._starts, index) - 1
        batch, first, _ = self._spans[span]
        return DeliveryHandle(batch, first + index - self._starts[span])

    def __iter__(self) -> Iterator[DeliveryHandle]:
        for batch, first, count in self._spans:
            for i in range(first, first + count):
                yield DeliveryHandle(batch, i)

    def done(self) -> bool:
        """True once every record was acknowledged or failed."""
        return all(batch.done() for batch, _, _ in self._spans)

    async def wait(self) -> None:
        """Wait until every record is done; raise the first delivery error."""
        for batch, _, _ in self._spans:
            await batch.future()
        for batch, _, _ in self._spans:
            if batch.error is not None:
                raise batch.error

    def __repr__(self) -> str:
        return f"DeliveryHandles({self._count} records in {len(self._spans)} batches)"
