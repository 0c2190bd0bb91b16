"""Iterating a subscription: MessageStream and the cursor that reports progress lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from comet.aio.channel import Chunk, Message, MessageBatch

if TYPE_CHECKING:
    from comet.aio.consumer import Consumer, _Subscription


class ChunkCursor:
    """Where an iterator is in its current chunk, so commits know what was handled.

    Messages before `index` were returned; the last one returned is still
    being handled while `in_hand` is set. The position is written to the
    consumer lazily (`sync`), before each commit and at chunk boundaries,
    not once per message.
    """

    __slots__ = ("__weakref__", "chunk", "consumer", "in_hand", "index", "synced")

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.chunk: Chunk | None = None
        self.index = 0
        self.synced = 0
        self.in_hand = False

    def sync(self) -> None:
        """Tell the consumer about every message handled so far."""
        chunk = self.chunk
        if chunk is None:
            return
        handled = self.index - 1 if self.in_hand else self.index
        if handled > self.synced:
            self.consumer.mark_handled(chunk, handled, handled - self.synced)
            self.synced = handled

    def load(self, chunk: Chunk) -> None:
        """Move on to a new chunk (everything returned so far counts as handled)."""
        self.in_hand = False
        self.sync()
        self.chunk = chunk
        self.index = 0
        self.synced = 0


class MessageStream:
    """Async iterator over one subscription; a record counts as handled when the next is asked."""

    def __init__(self, consumer: Consumer, sub: _Subscription) -> None:
        self._consumer = consumer
        self._sub = sub
        self._cursor = ChunkCursor(consumer)
        consumer._cursors.add(self._cursor)

    def __aiter__(self) -> MessageStream:
        return self

    def mark_done(self) -> None:
        """Count the record last returned as handled now (before asking for the next)."""
        self._cursor.in_hand = False
        self._cursor.sync()

    async def __anext__(self) -> Message:
        cursor = self._cursor
        chunk = cursor.chunk
        i = cursor.index
        if chunk is not None and i < len(chunk.messages) and chunk.epoch == self._consumer._epoch:
            cursor.index = i + 1
            cursor.in_hand = True
            return chunk.messages[i]
        return await self._next_chunk()

    async def _next_chunk(self) -> Message:
        consumer = self._consumer
        cursor = self._cursor
        cursor.in_hand = False
        cursor.sync()
        if consumer._since_commit >= consumer.config.auto_commit_every:
            consumer._kick_commit()
        while True:
            chunk = await self._sub.channel.get()
            if chunk is None:
                raise StopAsyncIteration
            cursor.load(chunk)
            if chunk.epoch == consumer._epoch and chunk.messages:
                cursor.index = 1
                cursor.in_hand = True
                return chunk.messages[0]


class BatchStream:
    """Async iterator of MessageBatches; a batch counts as handled when the next is asked."""

    def __init__(self, consumer: Consumer, sub: _Subscription) -> None:
        self._consumer = consumer
        self._sub = sub
        self._cursor = ChunkCursor(consumer)
        consumer._cursors.add(self._cursor)

    def __aiter__(self) -> BatchStream:
        return self

    def mark_done(self) -> None:
        """Count the batch last returned as handled now."""
        cursor = self._cursor
        if cursor.chunk is not None:
            cursor.index = len(cursor.chunk)  # index 0 while the batch is in hand
            cursor.sync()

    async def __anext__(self) -> MessageBatch:
        consumer = self._consumer
        self.mark_done()
        if consumer._since_commit >= consumer.config.auto_commit_every:
            consumer._kick_commit()
        cursor = self._cursor
        while True:
            chunk = await self._sub.channel.get()
            if chunk is None:
                raise StopAsyncIteration
            cursor.load(chunk)
            if chunk.epoch == consumer._epoch and len(chunk):
                return chunk.batch()
