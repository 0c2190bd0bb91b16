"""Consumer (asyncio): group membership, partition fetchers, delivery and commits.

Delivery is at-least-once: an offset is committed only after the handler
returned for its record (for the iterator form: once the next record was
asked for). On a rebalance the consumer stops fetching, lets the handler
finish the record in hand, commits, re-joins, and resumes from the group's
committed offsets; records fetched for partitions it lost are dropped, not
delivered.

A handler that raises is logged and called again with the same record after
a backoff (50 ms doubling to 5 s): skipping it would lose the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from comet.aio.channel import Chunk, Message, MessageChannel
from comet.aio.client import EARLIEST, LATEST, CometClient
from comet.aio.config import ConsumerConfig
from comet.aio.events import EventLogger
from comet.aio.stream import BatchStream, ChunkCursor, MessageStream
from comet.aio.types import FetchResult
from comet.errors import (
    ClientClosedError,
    CometError,
    OffsetOutOfRangeError,
    StaleGenerationError,
    UnknownMemberError,
)
from comet.names import is_valid_topic_name
from comet.records import RecordSet

log = EventLogger(__name__)
new_tuple = tuple.__new__

Handler = Callable[[Message], Any]
TopicPartition = tuple[str, int]


class _Subscription:
    """One subscribed topic: its buffer and how its records are delivered."""

    def __init__(self, topic: str, handler: Handler | None, blocking: bool, capacity: int) -> None:
        self.topic = topic
        self.handler = handler
        self.channel = MessageChannel(capacity)
        self.busy = asyncio.Lock()
        self.executor = ThreadPoolExecutor(1, f"comet-handler-{topic}") if blocking else None
        self.is_async = handler is not None and inspect.iscoroutinefunction(handler)
        self.dispatcher: asyncio.Task[None] | None = None


class Consumer:
    """A member of one consumer group; subscribe to topics with a handler or iterate them."""

    def __init__(self, config: ConsumerConfig, *, client: CometClient | None = None) -> None:
        config.validate()
        self.config = config
        self.group = config.group
        self._own_client = client is None
        self._client = client or CometClient(config.bootstrap_addresses)
        self._subs: dict[str, _Subscription] = {}
        self._member_id = ""
        self._generation = -1
        self._epoch = 0
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._fetchers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._processed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._since_commit = 0
        self._rejoin = asyncio.Event()
        self._assigned = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._commit_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._cursors: weakref.WeakSet[ChunkCursor] = weakref.WeakSet()
        self._closed = False

    # --- public API ----------------------------------------------------------

    @property
    def member_id(self) -> str:
        """This member's id in its group ('' before the first join)."""
        return self._member_id

    @property
    def generation(self) -> int:
        """The group generation of the current assignment (-1 before the first join)."""
        return self._generation

    def assignment(self) -> frozenset[TopicPartition]:
        """The (topic, partition) pairs this member consumes now."""
        return self._assignment

    async def subscribe(self, topic: str, handler: Handler, *, blocking: bool = False) -> None:
        """Deliver every record of `topic` to `handler` (a function or coroutine function).

        blocking=True runs a plain function in a worker thread, so it may block.
        """
        self._add_subscription(topic, handler, blocking)

    def messages(self, topic: str) -> MessageStream:
        """Subscribe to `topic` and iterate its records: `async for msg in consumer.messages(t)`."""
        return MessageStream(self, self._add_subscription(topic, None, False))

    def batches(self, topic: str) -> BatchStream:
        """Subscribe to `topic` and iterate MessageBatches (the fastest way to consume).

        A batch counts as handled once the next one is asked for.
        """
        return BatchStream(self, self._add_subscription(topic, None, False))

    async def unsubscribe(self, topic: str) -> None:
        """Stop consuming `topic`; its partitions go to other members of the group."""
        sub = self._subs.pop(topic, None)
        if sub is None:
            raise ValueError(f"topic: not subscribed to {topic!r}")
        self._rejoin.set()
        await self._retire(sub)

    async def commit(self) -> None:
        """Commit the offsets of every record handled so far; raises if the group moved on."""
        await self._commit(raise_errors=True)

    async def wait_for_assignment(self, timeout: float | None = None) -> frozenset[TopicPartition]:
        """Wait until this member has been given partitions (or the timeout passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._assigned.wait(), timeout)
        return self._assignment

    async def close(self) -> None:
        """Finish the record in hand, commit, leave the group and release connections."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._revoke()
        if self._member_id:
            with contextlib.suppress(CometError):
                await self._client.leave_group(self.group, self._member_id)
        for sub in list(self._subs.values()):
            await self._retire(sub)
        self._subs.clear()
        if self._own_client:
            await self._client.close()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- subscriptions -------------------------------------------------------

    def _add_subscription(
        self, topic: str, handler: Handler | None, blocking: bool
    ) -> _Subscription:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if not is_valid_topic_name(topic):
            raise ValueError(f"topic: {topic!r} is not a valid topic name")
        if topic in self._subs:
            raise ValueError(f"topic: already subscribed to {topic!r}; unsubscribe first")
        sub = _Subscription(topic, handler, blocking, self.config.channel_buffer)
        self._subs[topic] = sub
        if handler is not None:
            sub.dispatcher = asyncio.create_task(self._dispatch(sub), name=f"deliver-{topic}")
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._membership_loop(), name=f"group-{self.group}"),
                asyncio.create_task(self._auto_commit_loop(), name=f"commit-{self.group}"),
            ]
        self._rejoin.set()
        return sub

    async def _retire(self, sub: _Subscription) -> None:
        if sub.dispatcher is not None:
            sub.dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.dispatcher
        await sub.channel.close()
        if sub.executor is not None:
            sub.executor.shutdown(wait=False)

    # --- membership ----------------------------------------------------------

    async def _membership_loop(self) -> None:
        cfg = self.config
        backoff = cfg.backoff
        while True:
            try:
                if self._rejoin.is_set():
                    await self._join()
                    backoff = cfg.backoff
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rejoin.wait(), cfg.effective_heartbeat_interval)
                if self._rejoin.is_set() or not self._member_id:
                    continue
                beat = await self._client.heartbeat(self.group, self._member_id, self._generation)
                if beat.rebalance:
                    self._rejoin.set()
            except UnknownMemberError:
                self._member_id, self._generation = "", -1
                self._rejoin.set()
            except StaleGenerationError:
                self._rejoin.set()
            except CometError as exc:
                log.warning("consumer.group_call_failed", group=self.group, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cfg.max_backoff)

    async def _join(self) -> None:
        """Revoke everything, commit, join with the current topics, start the new fetchers."""
        self._rejoin.clear()
        await self._revoke()
        topics = sorted(self._subs)
        if not topics:
            if self._member_id:
                await self._client.leave_group(self.group, self._member_id)
                self._member_id, self._generation = "", -1
            return
        try:
            reply = await self._client.join_group(
                self.group,
                self._member_id,
                topics,
                session_timeout_ms=int(self.config.session_timeout * 1000),
                client_id=self.config.client_id,
            )
        except CometError:
            self._rejoin.set()
            raise
        self._member_id, self._generation = reply.member_id, reply.generation
        assignment = frozenset(
            (tp.topic, p)
            for tp in reply.assignment
            if tp.topic in self._subs
            for p in tp.partitions
        )
        try:
            positions = await self._starting_positions(assignment)
        except CometError:
            # Joined but without positions to fetch from: join again, or the member
            # would heartbeat forever with its partitions unconsumed.
            self._rejoin.set()
            raise
        self._epoch += 1
        self._assignment = assignment
        self._processed = dict(positions)
        self._committed = {tp: off for tp, off in positions.items()}
        for tp, offset in positions.items():
            self._fetchers[tp] = asyncio.create_task(self._fetch_loop(tp, offset, self._epoch))
        log.info(
            "consumer.assigned",
            group=self.group,
            member=self._member_id,
            generation=self._generation,
            partitions=sorted(assignment),
        )
        if assignment:
            self._assigned.set()

    async def _revoke(self) -> None:
        """Stop fetchers, drop undelivered records, wait for handlers, commit what they did."""
        self._epoch += 1
        fetchers, self._fetchers = self._fetchers, {}
        for task in fetchers.values():
            task.cancel()
        for task in fetchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subs.values():
            await sub.channel.drop_older_than(self._epoch)
            async with sub.busy:
                pass
        if self._assignment:
            with contextlib.suppress(CometError):
                await self._commit(raise_errors=False)
        self._assignment = frozenset()
        self._assigned.clear()

    async def _starting_positions(
        self, assignment: frozenset[TopicPartition]
    ) -> dict[TopicPartition, int]:
        if not assignment:
            return {}
        by_topic: dict[str, list[int]] = {}
        for topic, partition in assignment:
            by_topic.setdefault(topic, []).append(partition)
        committed = await self._client.fetch_offsets(self.group, by_topic)
        positions = {}
        for tp in assignment:
            offset = committed.get(tp, -1)
            positions[tp] = offset if offset >= 0 else await self._reset_position(tp)
        return positions

    async def _reset_position(self, tp: TopicPartition) -> int:
        which = EARLIEST if self.config.auto_offset_reset == "earliest" else LATEST
        return await self._client.list_offsets(tp[0], tp[1], which)

    # --- fetching and delivery ---------------------------------------------

    async def _fetch_loop(self, tp: TopicPartition, offset: int, epoch: int) -> None:
        """Fetch, decode and queue one partition; the next fetch overlaps the decoding."""
        cfg = self.config
        topic, partition = tp
        sub = self._subs[topic]
        backoff = cfg.backoff
        wait_ms = int(cfg.poll_interval * 1000)
        step = cfg.max_poll_records

        def fetch(at: int) -> asyncio.Task[FetchResult]:
            return asyncio.create_task(
                self._client.fetch(
                    topic, partition, at, max_bytes=cfg.fetch_max_bytes, max_wait_ms=wait_ms
                )
            )

        pending = fetch(offset)
        try:
            while True:
                try:
                    result = await pending
                except OffsetOutOfRangeError:
                    try:
                        offset = await self._reset_position(tp)
                    except CometError as exc:  # retried, like a failed fetch
                        log.debug(
                            "consumer.reset_failed",
                            topic=topic,
                            partition=partition,
                            error=str(exc),
                        )
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, cfg.max_backoff)
                        pending = fetch(offset)
                        continue
                    log.warning(
                        "consumer.offset_reset", topic=topic, partition=partition, to=offset
                    )
                    pending = fetch(offset)
                    continue
                except CometError as exc:
                    log.debug(
                        "consumer.fetch_failed", topic=topic, partition=partition, error=str(exc)
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.max_backoff)
                    pending = fetch(offset)
                    continue
                backoff = cfg.backoff
                sets = RecordSet.split(result.records, offset, step)
                if sets:
                    offset = max(offset, sets[-1].next_offset)
                pending = fetch(offset)  # in flight while these records are delivered
                convert = self._to_messages
                for records in sets:
                    await sub.channel.put(Chunk(epoch, topic, partition, records, convert))
        finally:
            pending.cancel()

    def _to_messages(self, chunk: Chunk) -> list[Message]:
        """Message objects for a chunk's records, deserialized as configured."""
        topic, partition = chunk.topic, chunk.partition
        kd, vd = self.config.key_deserializer, self.config.value_deserializer
        if kd is None and vd is None:
            # tuple.__new__ skips the namedtuple's Python-level __new__ (hot path)
            return [
                new_tuple(
                    Message, (topic, partition, r.offset, r.key, r.value, r.timestamp, r.headers)
                )
                for r in chunk.records
            ]
        return [
            Message(
                topic,
                partition,
                r.offset,
                kd(r.key) if kd and r.key is not None else r.key,
                vd(r.value) if vd and r.value is not None else r.value,
                r.timestamp,
                r.headers,
            )
            for r in chunk.records
        ]

    async def _dispatch(self, sub: _Subscription) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await sub.channel.get()
            if chunk is None:
                return
            async with sub.busy:
                if sub.executor is not None:
                    await loop.run_in_executor(sub.executor, self._deliver_blocking, sub, chunk)
                else:
                    await self._deliver(sub, chunk)
            if self._since_commit >= self.config.auto_commit_every:
                self._kick_commit()

    async def _deliver(self, sub: _Subscription, chunk: Chunk) -> None:
        handler = sub.handler
        assert handler is not None
        handled = 0
        is_async = sub.is_async
        try:
            for message in chunk.messages:
                delay = self.config.backoff
                while chunk.epoch == self._epoch:
                    try:
                        if is_async:
                            await handler(message)
                        else:
                            result = handler(message)
                            if result is not None and inspect.isawaitable(result):
                                await result
                        break
                    except Exception:
                        log.exception(
                            "consumer.handler_failed", topic=sub.topic, offset=message.offset
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self.config.max_backoff)
                else:
                    return
                handled += 1
        finally:
            self.mark_handled(chunk, handled)

    def _deliver_blocking(self, sub: _Subscription, chunk: Chunk) -> None:
        """Run a plain handler over a chunk in the subscription's worker thread."""
        handler = sub.handler
        assert handler is not None
        handled = 0
        try:
            for message in chunk.messages:
                delay = self.config.backoff
                while chunk.epoch == self._epoch:
                    try:
                        handler(message)
                        break
                    except Exception:
                        log.exception(
                            "consumer.handler_failed", topic=sub.topic, offset=message.offset
                        )
                        time.sleep(delay)
                        delay = min(delay * 2, self.config.max_backoff)
                else:
                    return
                handled += 1
        finally:
            self.mark_handled(chunk, handled)

    def mark_handled(self, chunk: Chunk, count: int, newly: int | None = None) -> None:
        """Record that the first `count` messages of `chunk` were handled.

        Ignored when the chunk's partition was reassigned since. Only a key of
        the current assignment is overwritten: this may run on a handler
        thread while the loop iterates the dict to commit.
        """
        if count <= 0 or chunk.epoch != self._epoch:
            return
        tp = (chunk.topic, chunk.partition)
        if tp in self._processed:
            self._processed[tp] = chunk.offset_after(count)
            self._since_commit += count if newly is None else newly

    # --- commits -------------------------------------------------------------

    def _kick_commit(self) -> None:
        if self.config.enable_auto_commit and (
            self._commit_task is None or self._commit_task.done()
        ):
            self._commit_task = asyncio.create_task(self._commit(raise_errors=False))

    async def _auto_commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.auto_commit_interval)
            if self.config.enable_auto_commit:
                await self._commit(raise_errors=False)

    async def _commit(self, raise_errors: bool) -> None:
        for cursor in list(self._cursors):
            cursor.sync()
        async with self._commit_lock:
            pending = {
                tp: off
                for tp, off in self._processed.items()
                if self._committed.get(tp) != off and tp in self._assignment
            }
            if not pending or not self._member_id:
                return
            self._since_commit = 0
            try:
                await self._client.commit_offsets(
                    self.group, pending, member_id=self._member_id, generation=self._generation
                )
            except (StaleGenerationError, UnknownMemberError) as exc:
                self._rejoin.set()
                if raise_errors:
                    raise
                log.info("consumer.commit_refused", group=self.group, error=str(exc))
                return
            except CometError as exc:
                if raise_errors:
                    raise
                log.warning("consumer.commit_failed", group=self.group, error=str(exc))
                return
            self._committed.update(pending)
