"""One partition hosted by this broker: its log, group commit and long-poll waiters."""

from __future__ import annotations

import asyncio
import contextlib

from comet.broker.errors import (
    AckTimeoutError,
    BrokerError,
    CorruptDataError,
    InvalidRequestError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RequestTooLargeError,
    StorageFullError,
)
from comet.cluster import PartitionState
from comet.records import InvalidBatchError, validate_batches
from comet.storage import (
    AppendInfo,
    CorruptRecordError,
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


class Partition:
    """A partition led by this broker.

    Produce validates the batches (CRC, framing) before anything is written,
    appends them with one write, and with flush policy "batch" acknowledges
    only once a (shared) fdatasync covered them. Fetch returns stored bytes
    below the high watermark and can wait for new data.
    """

    def __init__(self, topic: str, index: int, log: PartitionLog, leader_epoch: int = 0) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.is_leader = True
        self.state: PartitionState | None = None
        self.flusher = LogFlusher(log)
        self._data_arrived: asyncio.Future[None] | None = None
        self._closed = False
        self._gone: BrokerError | None = None

    def update_state(self, state: PartitionState, me: str) -> None:
        """Take the coordinator's view of leadership; answer long-polls when leadership moves."""
        was_leader = self.is_leader
        self.state = state
        self.leader_epoch = state.leader_epoch
        self.is_leader = state.leader == me
        if was_leader and not self.is_leader:
            self._wake_fetchers()

    @property
    def high_watermark(self) -> int:
        """Offset below which records are visible to consumers (one replica: the log end)."""
        return self.log.log_end_offset

    async def produce(self, records: bytes, acks: int, timeout_s: float) -> AppendInfo:
        """Validate and append client-framed batches; wait for `acks`; return where they went."""
        if acks not in VALID_ACKS:
            raise InvalidRequestError(f"acks: must be 0, 1 or -1 (all), got {acks}")
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
        try:
            info = self.log.append(bytearray(records), headers, self.leader_epoch)
        except LogWriteError as exc:
            raise StorageFullError(
                f"{self.topic}/{self.index}: write failed, nothing written: {exc}"
            ) from exc
        self._wake_fetchers()
        if acks != ACKS_NONE and self.log.config.flush_policy == "batch":
            try:
                await asyncio.wait_for(self.flusher.wait_durable(info.last_offset + 1), timeout_s)
            except TimeoutError:
                raise AckTimeoutError(
                    f"{self.topic}/{self.index}: appended at {info.base_offset} but not fsynced "
                    f"within {timeout_s:.3f}s"
                ) from None
        return info

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """Stored batches from `offset`, below the high watermark, without waiting."""
        try:
            return self.log.read(offset, max_bytes, self.high_watermark)
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
            if self._gone is not None:
                raise self._gone
            if not self.is_leader:
                raise NotLeaderError(
                    f"{self.topic}/{self.index}: leadership moved away from this broker; "
                    "refresh metadata"
                )
            result = self.read(offset, max_bytes)
            remaining = deadline - loop.time()
            if len(result.records) >= min_bytes or remaining <= 0 or self._closed:
                return result
            if self._data_arrived is None or self._data_arrived.done():
                self._data_arrived = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._data_arrived), remaining)

    def _wake_fetchers(self) -> None:
        waiter = self._data_arrived
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._data_arrived = None

    def close_waiters(self, gone: BrokerError | None = None) -> None:
        """Answer every long-poll now and stop waiting from here on.

        On shutdown pending fetches get what is there; with `gone` (the
        partition is being deleted) they fail with that error instead.
        """
        self._closed = True
        self._gone = gone
        self._wake_fetchers()
