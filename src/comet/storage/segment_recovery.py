"""Checking a segment's indexes against its log, and rebuilding them when they are wrong.

The indexes are derived data (formats in OffsetIndex and TimeIndex): written
only after the log bytes they describe were fdatasynced, and trusted no
further than the log confirms. They are checked at three moments:

- Opening a sealed segment (`_load_sealed`): both files must exist and load
  consistently, the last offset entry must point at its batch, and no batch
  after it may be unindexed or newer than the last time entry. Otherwise
  both indexes are rebuilt by a header scan of the log (`segment.index_rebuilt`).
- Opening the active segment (`_recover_active`): offset entries are dropped
  back to the last one that points at its batch; every batch after it is
  re-validated with its CRC, and the first bad or partial batch is cut off
  with everything after it (`segment.truncated`).
- A read that meets a wrong entry further in (loading checks only the last
  one): `_repaired_index` and `_repair_indexes` rebuild both indexes in
  place, and the read goes on.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import structlog

from comet.storage.batch_scan import BatchScanner
from comet.storage.log_file import LogFile
from comet.storage.offset_index import MAX_RELATIVE_OFFSET, OffsetIndex
from comet.storage.time_index import NO_TIMESTAMP, TimeIndex

log = structlog.get_logger(__name__)


class SegmentRecovery:
    """Mixin of LogSegment: loading its indexes, checking them, rebuilding them."""

    __slots__ = ()

    base_offset: int
    file: LogFile
    offset_index: OffsetIndex
    time_index: TimeIndex
    index_interval_bytes: int
    max_timestamp: int
    next_offset: int
    first_timestamp: int | None
    _next_index_position: int
    _synced_size: int

    if TYPE_CHECKING:  # defined by LogSegment; declared for type checkers only

        @property
        def path(self) -> str: ...
        @property
        def size(self) -> int: ...
        def _maybe_index(self, position: int, offset: int, max_ts: int) -> None: ...
        def _seal_time_index(self, max_ts: int, next_offset: int) -> None: ...
        def _first_batch_timestamp(self) -> int | None: ...

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
