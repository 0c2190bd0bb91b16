"""One segment of a partition log: a .log file of batches with its two sparse indexes."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog

from comet.records import BATCH_HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header
from comet.records.batch import MAGIC
from comet.storage.batch_scan import (
    MIN_BATCH_LENGTH,
    BatchScanner,
    StoredBatch,
    frame_problem,
    valid_prefix,
)
from comet.storage.errors import CorruptRecordError, LogClosedError, LogIOError
from comet.storage.log_file import LogFile
from comet.storage.offset_index import OffsetIndex
from comet.storage.time_index import NO_TIMESTAMP, TimeIndex

log = structlog.get_logger(__name__)
_EPOCH = struct.Struct(">i")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
LOCATE_CHUNK = 16 * 1024  # a read finds its first batch within about one index interval
HEADER_SCAN_CHUNK = 16 * 1024  # header scans read this much while batches are smaller
MAX_RELATIVE_OFFSET = (1 << 32) - 1


def segment_name(base_offset: int) -> str:
    """File name stem of the segment starting at `base_offset`."""
    return f"{base_offset:020d}"


class LogSegment:
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

    def _load_sealed(self, next_base_offset: int) -> None:
        """Load the indexes of a complete segment; rebuild them if they are not consistent.

        Beyond each file's own checks, the batches after the last offset
        index entry (one pread or two) must not include one that should have
        been indexed, and none may be newer than the time index's last entry,
        which sealing made the segment's largest timestamp.
        """
        problem = self._missing_index_problem()
        if problem is None:
            problem = self.offset_index.load(self.offset_index.open(), self.size)
        if problem is None:
            problem = self._last_entry_problem()
        if problem is None:
            max_rel = max(next_base_offset - 1 - self.base_offset, 0)
            problem = self.time_index.load(self.time_index.open(), max_rel)
        if problem is not None:
            self._rebuild_indexes(problem)
            return
        last = self.offset_index.last()
        rel, start = last if last is not None else (0, 0)
        self._next_index_position = (
            start + max(self.index_interval_bytes, 1) if last else self.index_interval_bytes
        )
        scanner = self.file.scanner(start, self.base_offset + rel, verify_crc=False)
        max_ts = self.time_index.last_timestamp
        for batch in scanner:
            if batch.position >= self._next_index_position:
                problem = f"no index entry for the batch at {batch.position}"
            elif batch.max_timestamp > max_ts:
                problem = f"batch at {batch.position} is newer than the time index's last entry"
            if problem is not None:
                self._rebuild_indexes(problem)
                return
        if scanner.problem is not None:
            log.warning(
                "segment.corrupt_tail",
                file=self.path,
                position=scanner.position,
                reason=scanner.problem,
            )
        self.max_timestamp = max_ts
        self.next_offset = scanner.next_offset
        self._synced_size = self.size
        self.first_timestamp = self._first_batch_timestamp()

    def _missing_index_problem(self) -> str | None:
        for index in (self.offset_index, self.time_index):
            if not os.path.exists(index.path):
                return f"{index.path} is missing"
        return None

    def _last_entry_problem(self) -> str | None:
        """Why the last offset index entry does not point at its batch, or None."""
        last = self.offset_index.last()
        return None if last is None else self._entry_problem(*last)

    def _entry_problem(self, rel: int, pos: int) -> str | None:
        """Why the offset index entry (rel, pos) does not point at its batch, or None."""
        if rel == 0 and pos == 0:
            return None  # the segment start: an implicit entry, also what lookups fall back to
        header = self.file.header_at(pos)
        if header is None or header.base_offset != self.base_offset + rel:
            found = "no batch header" if header is None else f"base_offset {header.base_offset}"
            return f"entry expects offset {self.base_offset + rel} at {pos}, found {found}"
        return None

    def _reindex(self) -> tuple[BatchScanner, int]:
        """Recompute both indexes in memory from the batch headers; (scanner, max timestamp)."""
        self.offset_index.truncate(0)
        self.time_index.truncate(0)
        self._next_index_position = self.index_interval_bytes
        max_ts = NO_TIMESTAMP
        scanner = self.file.scanner(0, self.base_offset, verify_crc=False)
        for batch in scanner:
            max_ts = max(max_ts, batch.max_timestamp)
            self._maybe_index(batch.position, batch.base_offset, max_ts)
        self._seal_time_index(max_ts, scanner.next_offset)
        return scanner, max_ts

    def _repaired_index(self, rel: int, pos: int, size: int) -> bool:
        """After a scan from index entry (rel, pos) failed at once: rebuild if the entry is wrong.

        Loading checks only the last entry of an index, so a damaged entry in
        the middle shows when a read uses it. Returns False when the entry is
        right (the log itself is damaged there).
        """
        problem = self._entry_problem(rel, pos)
        if problem is None:
            return False
        self._repair_indexes(f"offset index {problem}", size)
        return True

    def _repair_indexes(self, reason: str, size: int) -> None:
        """Rebuild both indexes of a loaded segment in place; runs under the segment lock."""
        scanner, _ = self._reindex()
        if self._synced_size >= size:
            self.offset_index.rewrite()
            self.time_index.rewrite()
        else:  # entries must reach the files only after the bytes they point at are synced
            self.offset_index.discard_written()
            self.time_index.discard_written()
        log.warning(
            "segment.index_rebuilt",
            file=self.path,
            reason=reason,
            entries=len(self.offset_index),
            scanned_bytes=scanner.position,
        )

    def _rebuild_indexes(self, reason: str) -> None:
        """Recompute both indexes of a sealed segment from its batch headers."""
        scanner, max_ts = self._reindex()
        self.offset_index.rewrite()
        self.time_index.rewrite()
        self.max_timestamp = max_ts
        self.next_offset = scanner.next_offset
        self._synced_size = self.size
        self.first_timestamp = self._first_batch_timestamp()
        log.warning(
            "segment.index_rebuilt",
            file=self.path,
            reason=reason,
            entries=len(self.offset_index),
            scanned_bytes=scanner.position,
        )
        if scanner.problem is not None:
            log.warning(
                "segment.corrupt_tail",
                file=self.path,
                position=scanner.position,
                reason=scanner.problem,
            )

    def _recover_active(self) -> None:
        """Validate the active segment from its last trustworthy index entry; cut a bad tail."""
        self.offset_index.load(self.offset_index.open(), self.size)
        while self._last_entry_problem() is not None:
            self.offset_index.truncate(len(self.offset_index) - 1)
        last = self.offset_index.last()
        rel, start = last if last is not None else (0, 0)
        self.time_index.load(self.time_index.open(), MAX_RELATIVE_OFFSET)
        kept = self.time_index.count_at_or_below(rel) if last is not None else 0
        self.time_index.truncate(kept)
        self._next_index_position = (
            start + max(self.index_interval_bytes, 1) if last else self.index_interval_bytes
        )
        max_ts = self.time_index.last_timestamp
        scanner = self.file.scanner(start, self.base_offset + rel, verify_crc=True)
        for batch in scanner:
            max_ts = max(max_ts, batch.max_timestamp)
            self._maybe_index(batch.position, batch.base_offset, max_ts)
        if scanner.problem is not None:
            dropped = self.size - scanner.position
            self.file.truncate(scanner.position, durable=False)
            log.warning(
                "segment.truncated",
                file=self.path,
                valid_bytes=scanner.position,
                dropped_bytes=dropped,
                reason=scanner.problem,
            )
        self.max_timestamp = max_ts
        self.next_offset = scanner.next_offset
        self.first_timestamp = self._first_batch_timestamp()

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

    # --- reading ---------------------------------------------------------------------------------

    def read(
        self, offset: int, max_bytes: int, max_offset: int
    ) -> tuple[bytes | memoryview, int, int] | None:
        """(records, first_offset, next_offset) from the batch containing `offset`.

        None when no batch of this segment holds `offset` or anything after it.
        """
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            size = self.size
            first = self._locate(offset, size)
            if first is None:
                return None
            if first.base_offset >= max_offset:
                return b"", offset, offset
            pos = first.position
            upper = self.offset_index.position_of_first_at_or_above(max_offset - self.base_offset)
            end = size if upper is None else min(upper, size)
            data = self.file.pread(max(min(max_bytes, end - pos), first.size), pos)
        length, next_offset, problem = valid_prefix(data, first.base_offset, max_offset)
        if problem is not None:
            if length == 0:
                raise CorruptRecordError(self.path, pos, problem)
            log.warning(
                "segment.corrupt_batch", file=self.path, position=pos + length, reason=problem
            )
        # a view, not a slice: the bytes are copied once, into the response
        records = data if length == len(data) else memoryview(data)[:length]
        return records, first.base_offset, next_offset

    def batch_epoch(self, offset: int) -> tuple[int, int] | None:
        """(base offset, partition leader epoch) of the batch holding `offset`, if any."""
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            batch = self._locate(offset, self.size)
            if batch is None:
                return None
            return batch.base_offset, _EPOCH.unpack(self.file.pread(4, batch.position + 12))[0]

    def epoch_starts(self) -> list[tuple[int, int]]:
        """(partition_leader_epoch, base_offset) of each batch that starts a new epoch.

        A header scan of the whole segment (no CRC), for rebuilding the
        leader-epoch checkpoint; rare, so simplicity beats speed here.
        """
        out: list[tuple[int, int]] = []
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            scanner = self.file.scanner(0, self.base_offset, verify_crc=False, end=self.size)
            for batch in scanner:
                epoch = _EPOCH.unpack(self.file.pread(4, batch.position + 12))[0]
                if not out or epoch > out[-1][0]:
                    out.append((epoch, batch.base_offset))
        return out

    def iter_headers(self, start_offset: int, end_offset: int) -> Iterator[BatchHeader]:
        """Headers of the batches holding offsets in [start_offset, end_offset), in order.

        A header scan: no CRC check and no record bytes read beyond what one
        read of HEADER_SCAN_CHUNK brings in (one header per read once batches
        are larger than that). The lock is held per read only, so appends and
        reads go on meanwhile; bytes appended after the call are not scanned.
        Stops with a warning at the first batch that is not well framed.
        """
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            start_rel = max(start_offset - self.base_offset, 0)
            rel, pos = self.offset_index.lookup(start_rel)
            end = self.size
            if self._repaired_index(rel, pos, end):  # a rare scan: check its entry first
                rel, pos = self.offset_index.lookup(start_rel)
        expected = self.base_offset + rel
        buf = b""
        buf_start = pos
        read_size = HEADER_SCAN_CHUNK
        problem = None
        while pos < end and expected < end_offset:
            off = pos - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                with self.lock:
                    if self.closed:
                        raise LogClosedError(f"{self.path}: segment is closed")
                    buf = self.file.pread(min(read_size, end - pos), pos)
                buf_start, off = pos, 0
                if len(buf) < BATCH_HEADER_SIZE:
                    problem = f"partial batch header: {len(buf)} bytes"
                    break
            header = parse_header(buf, off)
            length, delta = header.batch_length, header.last_offset_delta
            size = length + LOG_OVERHEAD
            if (
                length < MIN_BATCH_LENGTH
                or size > end - pos
                or header.magic != MAGIC
                or header.base_offset != expected
                or delta < 0
            ):
                problem = frame_problem(
                    header.base_offset, length, header.magic, delta, end - pos, expected
                )
                break
            expected += delta + 1
            if expected > start_offset:
                yield header
            pos += size
            read_size = BATCH_HEADER_SIZE if size > HEADER_SCAN_CHUNK else HEADER_SCAN_CHUNK
        if problem is not None:
            log.warning("segment.header_scan_stopped", file=self.path, position=pos, reason=problem)

    def _locate(self, offset: int, size: int) -> StoredBatch | None:
        """The batch containing `offset` (framing checked, no CRC), or None past the end."""
        for retry in (False, True):
            rel, pos = self.offset_index.lookup(offset - self.base_offset)
            scanner = self.file.scanner(
                pos, self.base_offset + rel, verify_crc=False, end=size, chunk_size=LOCATE_CHUNK
            )
            for batch in scanner:
                if batch.next_offset > offset:
                    return batch
            if scanner.problem is None:
                return None
            if retry or scanner.position != pos or not self._repaired_index(rel, pos, size):
                break
        raise CorruptRecordError(self.path, scanner.position, scanner.problem)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first batch whose max_timestamp >= `timestamp_ms`, if any.

        The scan checks the time index entry it starts from: a batch at or
        below the entry's offset that is newer than the entry's timestamp
        proves the entry wrong, and the indexes are rebuilt from the log.
        """
        with self.lock:
            if self.closed:
                raise LogClosedError(f"{self.path}: segment is closed")
            for retry in (False, True):
                entry = self.time_index.lookup(timestamp_ms)
                entry_ts, entry_rel = entry if entry is not None else (NO_TIMESTAMP, -1)
                covered = self.base_offset + entry_rel  # the entry vouches for batches up to here
                start_rel, pos = self.offset_index.lookup(max(entry_rel, 0))
                scanner = self.file.scanner(pos, self.base_offset + start_rel, verify_crc=False)
                wrong = None
                for batch in scanner:
                    if batch.base_offset <= covered and batch.max_timestamp > entry_ts:
                        wrong = f"time index entry ({entry_ts}, {entry_rel}) but the batch at "
                        wrong += f"{batch.base_offset} has max timestamp {batch.max_timestamp}"
                        break
                    if batch.max_timestamp >= timestamp_ms:
                        return batch.base_offset
                if wrong is not None and not retry:
                    self._repair_indexes(wrong, self.size)
                    continue
                at_entry = scanner.problem is not None and scanner.position == pos
                if retry or not at_entry or not self._repaired_index(start_rel, pos, self.size):
                    break
        return None

    def largest_timestamp(self) -> int:
        """Newest batch timestamp, or the file's mtime when batches carry no timestamps."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        mtime = self.file.mtime_ms()
        return NO_TIMESTAMP if mtime is None else mtime

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
