"""Appending to a partition log: stamping, one write to the active segment, rolling.

`append` stamps base offsets and the leader epoch into batches the broker
validated; `append_stamped` takes a leader's batches as they are
(replication). Either writes all of a request's batches to the active
segment with one write and no fsync (durability is `flush`'s job). Before
the write, the active segment rolls when the append would pass
segment.bytes, when the incoming timestamps are more than segment.ms past
its first batch, or when a relative offset would no longer fit in 32 bits;
a roll seals the old segment before the new one's file is created.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import structlog

from comet.records import BatchHeader, stamp_batch
from comet.storage.config import LogConfig
from comet.storage.errors import (
    InvalidOffsetError,
    LogFlushError,
    LogWriteError,
    RecordTooLargeError,
    StorageError,
    io_error,
)
from comet.storage.files import fsync_directory
from comet.storage.leader_epoch import LeaderEpochCache
from comet.storage.offset_index import MAX_RELATIVE_OFFSET
from comet.storage.segment import LogSegment
from comet.storage.time_index import NO_TIMESTAMP

log = structlog.get_logger(__name__)


class AppendInfo(NamedTuple):
    """Where an append went: offsets [base_offset, last_offset] and what it held."""

    base_offset: int
    last_offset: int
    record_count: int
    max_timestamp: int
    size: int


class LogAppends:
    """Mixin of PartitionLog: append, append_stamped and rolling to a new segment."""

    directory: Path
    config: LogConfig
    leader_epochs: LeaderEpochCache
    _segments: tuple[LogSegment, ...]
    _log_end_offset: int
    _structure_lock: threading.Lock

    if TYPE_CHECKING:  # defined by PartitionLog; declared for type checkers only

        def _check_writable(self) -> None: ...
        def _go_offline(self, error: StorageError) -> None: ...

    def append(
        self, buf: bytearray, headers: Sequence[BatchHeader], leader_epoch: int
    ) -> AppendInfo:
        """Stamp offsets and leader epoch into validated batches and append them (no fsync)."""
        self._check_writable()
        size = len(buf)
        if size > self.config.max_message_bytes:
            raise RecordTooLargeError(
                f"{self.directory}: append of {size} bytes exceeds "
                f"max.message.bytes={self.config.max_message_bytes}"
            )
        _check_headers_cover(buf, headers)
        first = offset = self._log_end_offset
        pos = count = 0
        max_ts = NO_TIMESTAMP
        for header in headers:
            stamp_batch(buf, pos, offset, leader_epoch)
            pos += header.size
            offset += header.last_offset_delta + 1
            count += header.record_count
            if header.max_timestamp > max_ts:
                max_ts = header.max_timestamp
        self._write(buf, headers, first, offset, max_ts)
        if leader_epoch > self.leader_epochs.latest_epoch:
            self._assign_epoch(leader_epoch, first)
        return AppendInfo(first, offset - 1, count, max_ts, size)

    def append_stamped(
        self, buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader]
    ) -> AppendInfo:
        """Append batches that already carry their offsets (replication); no stamping."""
        self._check_writable()
        _check_headers_cover(buf, headers)
        first = expected = self._log_end_offset
        pos = count = 0
        max_ts = NO_TIMESTAMP
        for header in headers:
            if header.base_offset != expected:
                raise InvalidOffsetError(
                    f"{self.directory}: batch at byte {pos} has base_offset "
                    f"{header.base_offset}, expected {expected} (log end offset {first})"
                )
            pos += header.size
            expected = header.next_offset
            count += header.record_count
            if header.max_timestamp > max_ts:
                max_ts = header.max_timestamp
        self._write(buf, headers, first, expected, max_ts)
        epochs = self.leader_epochs
        for header in headers:
            if header.partition_leader_epoch > epochs.latest_epoch:
                self._assign_epoch(header.partition_leader_epoch, header.base_offset)
        return AppendInfo(first, expected - 1, count, max_ts, len(buf))

    def _assign_epoch(self, epoch: int, start_offset: int) -> None:
        """Record a new leader epoch after its first batch was appended.

        The batch is in the log already, so a checkpoint that cannot be
        written (a full disk) must not fail the append: the epoch is kept in
        memory, and the file, stale until the next change, is rebuilt from
        the batch headers when the log is opened again.
        """
        try:
            self.leader_epochs.assign(epoch, start_offset)
        except OSError as exc:
            log.warning(
                "leader_epoch.checkpoint_write_failed",
                directory=str(self.directory),
                epoch=epoch,
                error=str(exc),
            )

    def _write(
        self,
        buf: bytes | bytearray | memoryview,
        headers: Sequence[BatchHeader],
        first_offset: int,
        next_offset: int,
        max_timestamp: int,
    ) -> None:
        segment = self._segments[-1]
        if segment.size > 0:
            reason = self._roll_reason(segment, len(buf), next_offset - 1, max_timestamp)
            if reason is not None:
                segment = self._roll(first_offset, reason)
        try:
            segment.append(buf, headers, first_offset)
        except LogWriteError as exc:
            if not exc.rolled_back:
                self._go_offline(exc)
            raise
        self._log_end_offset = next_offset

    def _roll_reason(
        self, segment: LogSegment, size: int, last_offset: int, max_timestamp: int
    ) -> str | None:
        if segment.size + size > self.config.segment_bytes:
            return "segment.bytes"
        first_ts = segment.first_timestamp
        # Like Kafka: the age is measured between batch timestamps, not against the broker
        # clock, so a producer replaying old data does not roll on every append.
        if first_ts is not None and max_timestamp - first_ts > self.config.segment_ms:
            return "segment.ms"
        if last_offset - segment.base_offset > MAX_RELATIVE_OFFSET:
            return "relative offset overflow"
        return None

    def _roll(self, base_offset: int, reason: str) -> LogSegment:
        """Seal the active segment and start a new one at `base_offset`."""
        with self._structure_lock:
            old = self._segments[-1]
            try:
                old.seal()
            except OSError as exc:
                error = io_error(LogFlushError, exc, "sealing", old.path)
                self._go_offline(error)
                raise error from exc
            try:
                new = LogSegment.create(self.directory, base_offset, old.index_interval_bytes)
                fsync_directory(self.directory)
            except OSError as exc:
                error = io_error(LogWriteError, exc, "rolling to a new segment in", self.directory)
                try:
                    LogSegment.remove_files(self.directory, base_offset)
                except OSError:
                    # A leftover empty segment would claim offsets the old one keeps taking.
                    error.rolled_back = False
                    self._go_offline(error)
                raise error from exc
            self._segments = (*self._segments, new)
        log.info(
            "segment.rolled",
            file=new.path,
            base_offset=base_offset,
            previous_size=old.size,
            reason=reason,
        )
        return new


def _check_headers_cover(
    buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader]
) -> None:
    """Fail loudly when `headers` do not describe exactly the batches of `buf`."""
    if not headers:
        raise ValueError("append needs at least one batch")
    covered = sum(header.size for header in headers)
    if covered != len(buf):
        raise ValueError(f"headers cover {covered} bytes but the buffer holds {len(buf)}")
