"""One segment of a partition log: a .log file of batches with its two sparse indexes.

LogSegment holds the files and the append path, durability, truncation and
closing; its reads are in segment_read.py, and the checking and rebuilding
of its indexes (on open, and when a read finds a wrong entry) in
segment_recovery.py.
"""

from __future__ import annotations

import contextlib
import os
import threading
from bisect import bisect_right
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path

import structlog

from comet.records import BatchHeader
from comet.storage.errors import LogClosedError, LogIOError
from comet.storage.log_file import LogFile
from comet.storage.offset_index import MAX_RELATIVE_OFFSET, OffsetIndex
from comet.storage.segment_read import HEADER_SCAN_CHUNK, LOCATE_CHUNK, SegmentReads
from comet.storage.segment_recovery import SegmentRecovery
from comet.storage.time_index import NO_TIMESTAMP, TimeIndex

__all__ = [
    "HEADER_SCAN_CHUNK",
    "INDEX_SUFFIX",
    "LOCATE_CHUNK",
    "LOG_SUFFIX",
    "MAX_RELATIVE_OFFSET",
    "TIME_INDEX_SUFFIX",
    "LogSegment",
    "locate_segment",
    "segment_name",
]

log = structlog.get_logger(__name__)
_base_offset = attrgetter("base_offset")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"


def segment_name(base_offset: int) -> str:
    """File name stem of the segment starting at `base_offset`."""
    return f"{base_offset:020d}"


def locate_segment(segments: Sequence[LogSegment], offset: int) -> int:
    """Position in `segments` (by base offset) of the last one starting at or below `offset`.

    That is the segment whose range holds `offset` if any does; -1 when
    `offset` is below the first segment's base offset.
    """
    return bisect_right(segments, offset, key=_base_offset) - 1


class LogSegment(SegmentReads, SegmentRecovery):
    """The batches of one offset range: `{base_offset:020d}.log` plus .index and .timeindex.

    File format of the .log: RecordBatch v2 batches back to back, exactly the
    bytes the producer framed with base_offset and partition_leader_epoch
    stamped by the broker (layout in comet.records.batch); no file header, no
    padding. The first batch starts at the segment's base offset and each
    next batch at the previous batch's last offset + 1. Each batch carries a
    CRC-32C over attributes..end; the stamped fields are outside it, so the
    CRC written by the producer stays valid.

    A sealed (non-active) segment was fdatasynced with its indexes when the
    next segment was created, so it is complete; opening it loads its indexes
    and rebuilds them by a header scan if they are inconsistent. The active
    segment may end in a torn or lost tail after a crash: `load` re-validates
    it from its last trustworthy index entry with CRCs and cuts the first bad
    batch and everything after it.

    Thread-safety: one writer thread calls append and truncate_to; reads,
    flush, close and delete may run in other threads. `lock` guards the file
    descriptors, so an fd is never closed under a running read or write and
    never reused; fsync runs on a dup'ed fd outside the lock, so a slow fsync
    never holds up appends and reads.
    """

    __slots__ = (
        "_generation",
        "_next_index_position",
        "_synced_size",
        "base_offset",
        "closed",
        "file",
        "first_timestamp",
        "index_interval_bytes",
        "lock",
        "max_timestamp",
        "next_offset",
        "offset_index",
        "time_index",
    )

    def __init__(self, directory: Path, base_offset: int, index_interval_bytes: int) -> None:
        stem = str(directory / segment_name(base_offset))
        self.base_offset = base_offset
        self.file = LogFile(stem + LOG_SUFFIX)
        self.offset_index = OffsetIndex(stem + INDEX_SUFFIX, base_offset)
        self.time_index = TimeIndex(stem + TIME_INDEX_SUFFIX, base_offset)
        self.index_interval_bytes = index_interval_bytes
        self.lock = threading.Lock()
        self.closed = False
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.first_timestamp: int | None = None  # max_timestamp of the first batch, for rolls
        self._synced_size = 0
        self._generation = 0  # bumped by truncation, so an older flush cannot claim newer bytes
        self._next_index_position = index_interval_bytes

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, index_interval_bytes: int) -> LogSegment:
        """Create a new, empty segment (files are truncated if they exist)."""
        segment = cls(directory, base_offset, index_interval_bytes)
        try:
            segment.file.open(create=True)
            segment.offset_index.open(truncate=True)
            segment.time_index.open(truncate=True)
        except BaseException:
            segment._close_files()
            raise
        return segment

    @classmethod
    def load(
        cls,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        *,
        next_base_offset: int | None,
    ) -> LogSegment:
        """Open an existing segment; `next_base_offset` is None for the active (last) one."""
        segment = cls(directory, base_offset, index_interval_bytes)
        try:
            segment.file.open(create=False)
            if next_base_offset is None:
                segment._recover_active()
            else:
                segment._load_sealed(next_base_offset)
        except BaseException:
            segment._close_files()
            raise
        return segment

    @staticmethod
    def remove_files(directory: Path, base_offset: int) -> None:
        """Remove whatever files of the segment at `base_offset` exist (it is not open)."""
        stem = str(directory / segment_name(base_offset))
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stem + suffix)

    @property
    def path(self) -> str:
        """Path of the .log file."""
        return self.file.path

    @property
    def size(self) -> int:
        """Bytes in the .log file."""
        return self.file.size

    # --- appending -------------------------------------------------------------------------------

    def append(
        self, buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader], first_offset: int
    ) -> None:
        """Write stamped batches with offsets from `first_offset` on and index them.

        On a write error the file is cut back to its previous size and
        LogWriteError is raised (with `rolled_back` False if even that failed).
        """
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            pos = self.size
            self.file.append(buf)
            offset = first_offset
            max_ts = self.max_timestamp
            for header in headers:
                if header.max_timestamp > max_ts:
                    max_ts = header.max_timestamp
                if pos >= self._next_index_position:
                    self._maybe_index(pos, offset, max_ts)
                pos += header.size
                offset += header.last_offset_delta + 1
            if self.first_timestamp is None:
                self.first_timestamp = headers[0].max_timestamp
            self.max_timestamp = max_ts
            self.next_offset = offset

    def _maybe_index(self, position: int, offset: int, max_ts: int) -> None:
        """Index the batch at `position` if it is far enough from the previous entry."""
        if position >= self._next_index_position:
            rel = offset - self.base_offset
            self.offset_index.append(rel, position)
            self.time_index.maybe_append(max_ts, rel)
            self._next_index_position = position + max(self.index_interval_bytes, 1)

    # --- durability ------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether some appended bytes or index entries are not yet on disk."""
        return self.size > self._synced_size or self.offset_index.pending or self.time_index.pending

    def flush(self) -> None:
        """fdatasync the log, then copy index entries describing synced bytes to their files."""
        with self.lock:
            if self.closed:
                return
            generation = self._generation
            size = self.size
            entries = len(self.offset_index)
            time_entries = len(self.time_index)
            fd = self.file.dup()
        self.file.fdatasync_dup(fd)
        with self.lock:
            if self.closed or generation != self._generation:
                return
            self._synced_size = max(self._synced_size, size)
            try:
                self.offset_index.write_pending(entries)
                self.time_index.write_pending(time_entries)
            except LogIOError as exc:
                # The log bytes are durable; the entries stay pending and the next flush
                # retries. Until then recovery merely scans from an older entry.
                log.warning("segment.index_write_failed", file=self.path, error=str(exc))

    def seal(self) -> None:
        """Make the segment complete on disk before it stops being the active one.

        The log bytes must be synced (LogFlushError otherwise). The indexes
        are derived data: if writing them fails (a full disk), the entries
        stay pending for close, and a load that finds them missing rebuilds
        them from the log; so that failure is logged and the roll goes on.
        """
        self.flush()
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            self._seal_time_index(self.max_timestamp, self.next_offset)
            try:
                self.offset_index.sync()
                self.time_index.sync()
            except LogIOError as exc:
                log.warning("segment.index_write_failed", file=self.path, error=str(exc))

    def _seal_time_index(self, max_ts: int, next_offset: int) -> None:
        if next_offset > self.base_offset:
            last_batch = self._last_batch_offset(next_offset)
            self.time_index.maybe_append(max_ts, last_batch - self.base_offset)

    def _last_batch_offset(self, next_offset: int) -> int:
        last = self.offset_index.last()
        rel, pos = last if last is not None else (0, 0)
        base = self.base_offset + rel
        for batch in self.file.scanner(pos, base, verify_crc=False):
            if batch.next_offset == next_offset:
                return batch.base_offset
        return base

    # --- truncation, closing ---------------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Drop the batch containing `offset` and every later one, durably; return the new end.

        The returned offset is the base of the first dropped batch (next_offset
        if nothing was dropped).
        """
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            located = self._locate(offset, self.size) if offset < self.next_offset else None
            if located is None:
                return self.next_offset
            cut_pos, cut_offset = located.position, located.base_offset
            cut_rel = cut_offset - self.base_offset
            self.file.truncate(cut_pos, durable=True)
            self.offset_index.truncate(self.offset_index.count_below(cut_rel))
            self.time_index.truncate(self.time_index.count_at_or_below(cut_rel - 1))
            self.offset_index.sync()
            self.time_index.sync()
            self._generation += 1
            self._synced_size = cut_pos
            self.next_offset = cut_offset
            self._recompute_tail_state()
            return cut_offset

    def _recompute_tail_state(self) -> None:
        """Running max timestamp and next index position after the end moved back."""
        last = self.offset_index.last()
        rel, pos = last if last is not None else (0, 0)
        self._next_index_position = (
            pos + max(self.index_interval_bytes, 1) if last else self.index_interval_bytes
        )
        max_ts = self.time_index.last_timestamp
        for batch in self.file.scanner(pos, self.base_offset + rel, verify_crc=False):
            max_ts = max(max_ts, batch.max_timestamp)
        self.max_timestamp = max_ts
        self.first_timestamp = self._first_batch_timestamp()

    def close(self, *, sync_indexes: bool = False) -> None:
        """Close the files (writing pending index entries first if `sync_indexes`); idempotent."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                if sync_indexes and self.size <= self._synced_size:
                    self.offset_index.sync()
                    self.time_index.sync()
            finally:
                self._close_files()

    def delete(self) -> None:
        """Close and remove the segment's files, the log first."""
        with self.lock:
            self.closed = True
            self.file.delete()
            self.offset_index.delete()
            self.time_index.delete()

    def _close_files(self) -> None:
        self.file.close()
        self.offset_index.close()
        self.time_index.close()

    # --- helpers ---------------------------------------------------------------------------------

    def _first_batch_timestamp(self) -> int | None:
        if self.size == 0:
            return None
        header = self.file.header_at(0)
        return header.max_timestamp if header is not None else None

    def __repr__(self) -> str:
        return (
            f"LogSegment({self.path!r}, offsets=[{self.base_offset}, {self.next_offset}), "
            f"size={self.size})"
        )
