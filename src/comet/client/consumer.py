"""Consumer (synchronous): the asyncio consumer driven from ordinary threads.

Handlers given to subscribe() run in a worker thread per subscription, so
they may block; messages() yields records in the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from comet import aio
from comet.aio.channel import Message, MessageBatch
from comet.aio.config import ConsumerConfig
from comet.client.loop_thread import LoopThread, shared_loop


class Consumer:
    """A member of one consumer group, for synchronous code."""

    def __init__(self, config: ConsumerConfig, *, loop: LoopThread | None = None) -> None:
        self._loop = loop or shared_loop()
        self._aio: aio.Consumer = self._loop.run(_make_consumer(config))

    @property
    def config(self) -> ConsumerConfig:
        """The configuration in force."""
        return self._aio.config

    @property
    def member_id(self) -> str:
        """This member's id in its group."""
        return self._aio.member_id

    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs this member consumes now."""
        return self._aio.assignment()

    def wait_for_assignment(self, timeout: float | None = None) -> frozenset[tuple[str, int]]:
        """Block until partitions are assigned (or the timeout passes); return them."""
        return self._loop.run(self._aio.wait_for_assignment(timeout))

    def subscribe(self, topic: str, handler: Callable[[Message], Any]) -> None:
        """Call `handler(message)` for every record of `topic`, in a worker thread."""
        self._loop.run(self._aio.subscribe(topic, handler, blocking=True))

    def unsubscribe(self, topic: str) -> None:
        """Stop consuming `topic`."""
        self._loop.run(self._aio.unsubscribe(topic))

    def messages(self, topic: str) -> Iterator[Message]:
        """Subscribe to `topic` and yield its records (handled once the next is asked for).

        Progress is reported to the consumer per chunk (at most
        max_poll_records records) from this thread, and on close().
        """
        sub = self._loop.run(_add_iterator(self._aio, topic))
        consumer = self._aio
        every = consumer.config.auto_commit_every
        handled = 0
        chunk = None
        try:
            while True:
                if chunk is not None:
                    consumer.mark_handled(chunk, handled)
                    if consumer._since_commit >= every:
                        self._loop.loop.call_soon_threadsafe(consumer._kick_commit)
                chunk, handled = self._loop.run(sub.channel.get()), 0
                if chunk is None:
                    return
                for message in chunk.messages:
                    if chunk.epoch != consumer._epoch:
                        break
                    yield message
                    handled += 1
        finally:
            if chunk is not None:
                consumer.mark_handled(chunk, handled)

    def batches(self, topic: str) -> Iterator[MessageBatch]:
        """Subscribe to `topic` and yield MessageBatches (handled once the next is asked for)."""
        sub = self._loop.run(_add_iterator(self._aio, topic))
        consumer = self._aio
        every = consumer.config.auto_commit_every
        chunk = None
        while True:
            if chunk is not None:
                consumer.mark_handled(chunk, len(chunk))
                if consumer._since_commit >= every:
                    self._loop.loop.call_soon_threadsafe(consumer._kick_commit)
            chunk = self._loop.run(sub.channel.get())
            if chunk is None:
                return
            if chunk.epoch != consumer._epoch:
                chunk = None
                continue
            yield chunk.batch()

    def commit(self) -> None:
        """Commit the offsets of every record handled so far."""
        self._loop.run(self._aio.commit())

    def close(self) -> None:
        """Commit, leave the group and release connections; idempotent."""
        self._loop.run(self._aio.close())

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _make_consumer(config: ConsumerConfig) -> aio.Consumer:
    return aio.Consumer(config)


async def _add_iterator(consumer: aio.Consumer, topic: str) -> Any:
    return consumer._add_subscription(topic, None, False)
