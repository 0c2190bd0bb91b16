"""Reading a segment: whole batches, header scans, and lookups by offset and by time.

Each lookup starts at an index entry and scans the log from there (about one
index interval). Loading checks only an index's last entry, so a wrong entry
further in shows here: a scan that fails right at the entry it started from
has SegmentRecovery check that entry, and if it is wrong the indexes are
rebuilt and the lookup is retried once; if it is right, the log itself is
damaged there and CorruptRecordError names the file and the position. A
lookup by time also rebuilds them when a batch contradicts its time entry.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import structlog

from comet.records import BATCH_HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header
from comet.records.batch import MAGIC
from comet.storage.batch_scan import MIN_BATCH_LENGTH, StoredBatch, frame_problem, valid_prefix
from comet.storage.errors import CorruptRecordError, LogClosedError
from comet.storage.log_file import LogFile
from comet.storage.offset_index import OffsetIndex
from comet.storage.time_index import NO_TIMESTAMP, TimeIndex

log = structlog.get_logger(__name__)
_EPOCH = struct.Struct(">i")

LOCATE_CHUNK = 16 * 1024  # a read finds its first batch within about one index interval
HEADER_SCAN_CHUNK = 16 * 1024  # header scans read this much while batches are smaller


class SegmentReads:
    """Mixin of LogSegment: reads, header scans, and lookups by offset and by time."""

    __slots__ = ()

    base_offset: int
    file: LogFile
    offset_index: OffsetIndex
    time_index: TimeIndex
    lock: threading.Lock
    closed: bool
    max_timestamp: int

    if TYPE_CHECKING:  # defined by LogSegment and SegmentRecovery; for type checkers only

        @property
        def path(self) -> str: ...
        @property
        def size(self) -> int: ...
        def _repaired_index(self, rel: int, pos: int, size: int) -> bool: ...
        def _repair_indexes(self, reason: str, size: int) -> None: ...

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
