"""MessageChannel: the bounded buffer between partition fetchers and a subscription's delivery."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from comet.records import RecordSet


class Message(NamedTuple):
    """One consumed record. timestamp is the producer's CreateTime in ms since the epoch."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: int
    headers: list[tuple[str, bytes | None]]


class MessageBatch(NamedTuple):
    """Records of one partition as fetched, for consumers that take them in bulk.

    `records` is a RecordSet: the fetched batches, decoded while iterated
    into the codec's record views (attributes offset, timestamp in ms, key,
    value, headers; bytes, not deserialized). No per-record Message is
    built and no list of records is kept, which is the fastest way to
    consume; `len(records)` comes from the batch headers.
    """

    topic: str
    partition: int
    records: RecordSet


class Chunk:
    """Records of one partition from one fetch, tagged with the assignment epoch.

    Holds a RecordSet (batches, decoded lazily); `messages` builds Message objects (and
    applies deserializers) only when a per-message consumer asks for them.
    """

    __slots__ = ("_convert", "_messages", "epoch", "partition", "records", "topic")

    def __init__(
        self,
        epoch: int,
        topic: str,
        partition: int,
        records: RecordSet,
        convert: Callable[[Chunk], list[Message]],
    ) -> None:
        self.epoch = epoch
        self.topic = topic
        self.partition = partition
        self.records = records
        self._convert = convert
        self._messages: list[Message] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def messages(self) -> list[Message]:
        """The records as Message objects (built on first use)."""
        if self._messages is None:
            self._messages = self._convert(self)
        return self._messages

    def offset_after(self, count: int) -> int:
        """The offset following the first `count` records."""
        if count >= len(self.records):
            return self.records.next_offset
        return int(self.messages[count - 1].offset) + 1

    def batch(self) -> MessageBatch:
        """The chunk as a MessageBatch of record views."""
        return MessageBatch(self.topic, self.partition, self.records)


class MessageChannel:
    """Holds fetched chunks until delivered; put() waits while `capacity` messages are queued.

    A chunk is never split, so one chunk may take the count past capacity.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[Chunk] = deque()
        self._count = 0
        self._closed = False
        self._changed = asyncio.Condition()

    @property
    def queued(self) -> int:
        """Messages waiting for delivery."""
        return self._count

    async def put(self, chunk: Chunk) -> None:
        """Queue a chunk, waiting for room."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._count < self.capacity or self._closed)
            if self._closed:
                return
            self._chunks.append(chunk)
            self._count += len(chunk)
            self._changed.notify_all()

    async def get(self) -> Chunk | None:
        """The next chunk, waiting for one; None once the channel is closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._chunks) or self._closed)
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._count -= len(chunk)
            self._changed.notify_all()
            return chunk

    async def drop_older_than(self, epoch: int) -> None:
        """Discard chunks fetched under an earlier assignment."""
        async with self._changed:
            kept = [c for c in self._chunks if c.epoch >= epoch]
            self._chunks = deque(kept)
            self._count = sum(len(c) for c in kept)
            self._changed.notify_all()

    async def close(self) -> None:
        """Wake every waiter; get() returns None from now on."""
        async with self._changed:
            self._closed = True
            self._chunks.clear()
            self._count = 0
            self._changed.notify_all()
