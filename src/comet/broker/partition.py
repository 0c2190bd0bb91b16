"""One partition hosted by this broker, as leader or follower.

As leader it validates produced batches (CRC, framing) before anything is
written, appends them with one write, and acknowledges per `acks`: 0 after
validation, 1 once the leader has them (fsynced under flush policy
"batch"), all (-1) once the high watermark passed them, i.e. every in-sync
replica has them, with at least `min.insync.replicas` in the ISR. It serves
consumer fetches below the high watermark and follower fetches up to its
log end, tracking each follower (ReplicaTracker).

As follower it serves nothing to clients (they get NotLeaderError); a
ReplicaFetcher task appends what it pulls from the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from comet.broker.errors import (
    AckTimeoutError,
    BrokerError,
    CorruptDataError,
    FencedLeaderEpochError,
    InvalidRequestError,
    NotEnoughReplicasError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RequestTooLargeError,
    StorageFullError,
    UnknownLeaderEpochError,
)
from comet.broker.producer_state import ProducerStateManager
from comet.broker.replication import ReplicaTracker
from comet.cluster import PartitionState
from comet.records import InvalidBatchError, validate_batches
from comet.storage import (
    AppendInfo,
    CorruptRecordError,
    InvalidOffsetError,
    LogFlusher,
    LogWriteError,
    PartitionLog,
    ReadResult,
)
from comet.storage import (
    OffsetOutOfRangeError as StorageOutOfRange,
)

ACKS_NONE = 0
ACKS_LEADER = 1
ACKS_ALL = -1
VALID_ACKS = (ACKS_NONE, ACKS_LEADER, ACKS_ALL)

IsrChange = Callable[["Partition", frozenset[str]], None]


class Signal:
    """Wakes every waiter once when fired; cheap to wait on (one shared future)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self, timeout: float) -> None:
        """Wait until the next fire() or `timeout` seconds."""
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # no extra task per waiter, unlike wait_for
                await asyncio.shield(self._future)

    def fire(self) -> None:
        """Wake every current waiter."""
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)


class Partition:
    """A partition hosted here; see the module docstring for the two roles."""

    def __init__(
        self,
        topic: str,
        index: int,
        log: PartitionLog,
        leader_epoch: int = 0,
        *,
        me: str = "",
        on_isr_change: IsrChange | None = None,
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.me = me
        self.leader_epoch = leader_epoch
        self.is_leader = True
        self.state: PartitionState | None = None
        self.flusher = LogFlusher(log)
        self.tracker: ReplicaTracker | None = ReplicaTracker(
            me, (me,), (me,), log.log_end_offset, time.monotonic()
        )
        self._follower_hw = 0
        self._hw_moved = Signal()  # consumers and acks=all waiters
        self._appended = Signal()  # follower fetches waiting for new data
        self._on_isr_change = on_isr_change
        self._isr_change_pending: frozenset[str] | None = None
        self._closed = False
        self._gone: BrokerError | None = None
        self.producers = ProducerStateManager(f"{topic}/{index}")  # loaded before the 1st write
        self._producers_loading: asyncio.Task[None] | None = None

    # --- role ------------------------------------------------------------------

    def update_state(self, state: PartitionState, me: str) -> bool:
        """Take the coordinator's view; return True when this broker became a follower anew."""
        previous = self.state
        self.me = me
        self.state = state
        self.leader_epoch = state.leader_epoch
        was_leader = self.is_leader
        self.is_leader = state.leader == me
        now = time.monotonic()
        if self.is_leader:
            if self.tracker is None or not was_leader:
                start_hw = min(self.high_watermark, self.log.log_end_offset)
                self.tracker = ReplicaTracker(me, state.replicas, state.isr, start_hw, now)
            else:
                self.tracker.set_replicas(state.replicas, now)
                self.tracker.set_isr(state.isr)
            self._isr_change_pending = None
            self._update_high_watermark()
            return False
        if was_leader:
            self._follower_hw = min(self.high_watermark, self.log.log_end_offset)
        self.tracker = None
        self._hw_moved.fire()  # long-polls answer NotLeader now
        self._appended.fire()
        changed = previous is None or (previous.leader, previous.leader_epoch) != (
            state.leader,
            state.leader_epoch,
        )
        return changed or was_leader

    @property
    def high_watermark(self) -> int:
        """Offset below which records are visible to consumers."""
        if self.tracker is not None:
            return self.tracker.high_watermark
        return self._follower_hw

    def _update_high_watermark(self) -> None:
        if self.tracker is not None and self.tracker.advance_high_watermark(
            self.log.log_end_offset
        ):
            self._hw_moved.fire()

    def set_follower_high_watermark(self, leader_hw: int) -> None:
        """A follower learns the leader's HW (capped by what it has)."""
        self._follower_hw = max(self._follower_hw, min(leader_hw, self.log.log_end_offset))

    # --- produce (leader) -------------------------------------------------------

    async def produce(self, records: bytes | memoryview, acks: int, timeout_s: float) -> AppendInfo:
        """Validate and append client-framed batches; wait for `acks`; return where they went."""
        if acks not in VALID_ACKS:
            raise InvalidRequestError(f"acks: must be 0, 1 or -1 (all), got {acks}")
        producers = await self.producer_state()  # awaits only to load; nothing awaits after
        self._check_leader()
        limit = self.log.config.max_message_bytes
        if len(records) > limit:
            raise RequestTooLargeError(
                f"records: {len(records)} bytes exceed max.message.bytes={limit} "
                f"of {self.topic}/{self.index}; send smaller batches"
            )
        try:
            headers = validate_batches(records)
        except InvalidBatchError as exc:
            raise InvalidRequestError(f"records: {exc}") from None
        if acks == ACKS_ALL:
            self._check_min_isr("before the append; nothing was written")
        duplicate = producers.check(headers)  # no await from here to record(): one writer
        if duplicate is not None:  # a retry of a stored write: answer where it went
            max_ts = max(header.max_timestamp for header in headers)
            info = AppendInfo(*duplicate, max_ts, len(records))
        else:
            try:
                info = self.log.append(bytearray(records), headers, self.leader_epoch)
            except LogWriteError as exc:
                raise StorageFullError(
                    f"{self.topic}/{self.index}: write failed, nothing written: {exc}"
                ) from exc
            producers.record(headers, info.base_offset)
            self._appended.fire()
            self._update_high_watermark()
        if acks == ACKS_NONE:
            return info
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self.log.config.flush_policy == "batch":
            try:
                async with asyncio.timeout(timeout_s):  # no extra task, unlike wait_for
                    await self.flusher.wait_durable(info.last_offset + 1)
            except TimeoutError:
                raise AckTimeoutError(
                    f"{self.topic}/{self.index}: appended at {info.base_offset} but not fsynced "
                    f"within {timeout_s:.3f}s"
                ) from None
            except InvalidOffsetError:
                # Leadership moved while the fsync ran and this broker, now a follower,
                # cut its log below these records: they are not stored here.
                raise NotLeaderError(
                    f"{self.topic}/{self.index}: leadership moved before offsets "
                    f"{info.base_offset}-{info.last_offset} were fsynced and they were "
                    "truncated; retry at the new leader"
                ) from None
        if acks == ACKS_ALL:
            await self._wait_replicated(info, deadline)
        return info

    async def producer_state(self) -> ProducerStateManager:
        """Producer state, rebuilt from the log first if it ends elsewhere (open, truncation).

        The rebuild (a header scan) runs once in a worker thread, shared by
        every writer waiting for it and shielded from their cancellation;
        writers append only after this returns, so the log does not grow
        meanwhile.
        """
        producers = self.producers
        while producers.end_offset != self.log.log_end_offset:
            loading = self._producers_loading
            if loading is None or loading.done():
                headers = self.log.iter_batch_headers()
                end = self.log.log_end_offset
                loading = asyncio.ensure_future(asyncio.to_thread(producers.rebuild, headers, end))
                loading.add_done_callback(lambda task: task.cancelled() or task.exception())
                self._producers_loading = loading
            await asyncio.shield(loading)
        return producers

    async def _wait_replicated(self, info: AppendInfo, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self.high_watermark <= info.last_offset:
            if not self.is_leader:
                raise NotLeaderError(
                    f"{self.topic}/{self.index}: leadership moved before offsets "
                    f"{info.base_offset}-{info.last_offset} were replicated; they may be lost, "
                    "retry at the new leader"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AckTimeoutError(
                    f"{self.topic}/{self.index}: offsets {info.base_offset}-{info.last_offset} "
                    f"not replicated to the in-sync replicas in time (high watermark "
                    f"{self.high_watermark})"
                )
            await self._hw_moved.wait(remaining)
        self._check_min_isr("after the append; the records may be visible but were not acked")

    def _check_min_isr(self, when: str) -> None:
        needed = self.log.config.min_insync_replicas
        isr = self.tracker.isr if self.tracker is not None else frozenset()
        if len(isr) < needed:
            raise NotEnoughReplicasError(
                f"{self.topic}/{self.index}: {len(isr)} in-sync replica(s) "
                f"({', '.join(sorted(isr))}), min.insync.replicas={needed}: refused {when}"
            )

    def _check_leader(self) -> None:
        if self._gone is not None:
            raise self._gone
        if not self.is_leader:
            raise NotLeaderError(
                f"{self.topic}/{self.index}: this broker is no longer the leader; refresh metadata"
            )

    # --- consumer reads (leader) ---------------------------------------------------

    def read(self, offset: int, max_bytes: int, upto: int | None = None) -> ReadResult:
        """Stored batches from `offset`, below the high watermark (or `upto`), without waiting."""
        try:
            return self.log.read(offset, max_bytes, self.high_watermark if upto is None else upto)
        except StorageOutOfRange as exc:
            raise OffsetOutOfRangeError(f"{self.topic}/{self.index}: {exc}") from None
        except CorruptRecordError as exc:
            raise CorruptDataError(
                f"{self.topic}/{self.index}: stored data at offset {offset} is corrupt ({exc}); "
                "it is not served: restore it from a replica or truncate the partition"
            ) from None

    async def fetch(
        self, offset: int, max_bytes: int, max_wait_s: float, min_bytes: int = 1
    ) -> ReadResult:
        """Like read, but wait up to `max_wait_s` until at least `min_bytes` are available."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        while True:
            self._check_leader()
            result = self.read(offset, max_bytes)
            remaining = deadline - loop.time()
            if len(result.records) >= min_bytes or remaining <= 0 or self._closed:
                return result
            await self._hw_moved.wait(remaining)

    # --- follower fetches (leader) ----------------------------------------------------

    async def replica_fetch(
        self, replica_id: str, offset: int, epoch: int, max_bytes: int, max_wait_s: float
    ) -> ReadResult:
        """Serve a follower: record its progress, then batches from `offset` up to the log end."""
        self._check_leader()
        self.check_epoch(epoch)
        tracker = self.tracker
        assert tracker is not None
        if replica_id not in tracker.followers:
            raise InvalidRequestError(
                f"replica_id: {replica_id!r} is not a follower of {self.topic}/{self.index} "
                f"(replicas {', '.join(tracker.replicas)})"
            )
        log_end = self.log.log_end_offset
        if offset > log_end:
            raise OffsetOutOfRangeError(
                f"{self.topic}/{self.index}: follower {replica_id} asks for {offset}, beyond the "
                f"leader's log end {log_end}; truncate by leader epoch first"
            )
        tracker.record_fetch(replica_id, offset, log_end, time.monotonic())
        self._update_high_watermark()
        self._maybe_change_isr(tracker.isr | tracker.ready_to_join())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        while True:
            result = self.read(offset, max_bytes, upto=self.log.log_end_offset)
            remaining = deadline - loop.time()
            if result.records or remaining <= 0 or self._closed or not self.is_leader:
                return result
            await self._appended.wait(remaining)

    def check_epoch(self, epoch: int) -> None:
        """Fence a replica that believes in another leader epoch."""
        if epoch < self.leader_epoch:
            raise FencedLeaderEpochError(
                f"{self.topic}/{self.index}: leader epoch {epoch} is older than the current "
                f"{self.leader_epoch}; refresh metadata"
            )
        if epoch > self.leader_epoch:
            raise UnknownLeaderEpochError(
                f"{self.topic}/{self.index}: leader epoch {epoch} is newer than this leader's "
                f"{self.leader_epoch}; it has not learned of it yet, retry"
            )

    def shrink_isr(self, now: float, lag_time_max: float) -> None:
        """Drop followers that have not caught up within `lag_time_max` seconds."""
        tracker = self.tracker
        if tracker is None or not self.is_leader:
            return
        late = tracker.out_of_sync(now, lag_time_max)
        if late:
            self._maybe_change_isr(tracker.isr - late)

    def _maybe_change_isr(self, isr: frozenset[str]) -> None:
        tracker = self.tracker
        if tracker is None or self._on_isr_change is None:
            return
        if isr != tracker.isr and isr != self._isr_change_pending:
            self._isr_change_pending = isr
            self._on_isr_change(self, isr)

    def isr_change_done(self) -> None:
        """The requested ISR change was written (or failed): allow the next one."""
        self._isr_change_pending = None

    # --- shutdown ------------------------------------------------------------------

    def close_waiters(self, gone: BrokerError | None = None) -> None:
        """Answer every long-poll now and stop waiting from here on.

        On shutdown pending fetches get what is there; with `gone` (the
        partition is being deleted) they fail with that error instead.
        """
        self._closed = True
        self._gone = gone
        self._hw_moved.fire()
        self._appended.fire()
