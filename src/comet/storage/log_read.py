"""Reading a partition log: whole batches by offset, header scans, lookups by time.

Reads take no lock of the log: they work on the tuple of segments as it was
when they started, so they run beside appends, rolls, truncation and
retention. A segment that retention deleted meanwhile raises LogClosedError
in the segment, which a read turns into OffsetOutOfRangeError (the offset
is gone) and a scan or lookup skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, NamedTuple

from comet.records import BatchHeader
from comet.storage.errors import CorruptRecordError, LogClosedError, OffsetOutOfRangeError
from comet.storage.segment import LogSegment, locate_segment


class ReadResult(NamedTuple):
    """Whole stored batches from a read.

    `first_offset` is the base offset of the first batch (it may be below the
    offset asked for) and `next_offset` the offset after the last batch,
    where the next read continues; both equal the offset asked for when
    `records` is empty. The log's start and end offsets are as of the read.
    """

    records: bytes | memoryview
    first_offset: int
    next_offset: int
    log_start_offset: int
    log_end_offset: int


class LogReads:
    """Mixin of PartitionLog: read, iter_batch_headers and offset_for_timestamp."""

    _segments: tuple[LogSegment, ...]
    _log_end_offset: int
    _closed: bool

    if TYPE_CHECKING:  # defined by PartitionLog; declared for type checkers only

        @property
        def log_start_offset(self) -> int: ...
        def _check_open(self) -> None: ...

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> ReadResult:
        """Whole CRC-checked batches from the one containing `offset`, below `max_offset`.

        Stops before exceeding max_bytes but returns at least one batch if any
        is available; never a batch whose base_offset >= max_offset (default:
        log_end_offset). Raises OffsetOutOfRangeError outside
        [log_start_offset, log_end_offset] and CorruptRecordError when the
        first batch is corrupt.
        """
        self._check_open()
        segments = self._segments
        end = self._log_end_offset
        start = segments[0].base_offset
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(offset, start, end)
        limit = end if max_offset is None else min(max_offset, end)
        if offset >= limit:
            return ReadResult(b"", offset, offset, start, end)
        first = locate_segment(segments, offset)
        for i, segment in enumerate(islice(segments, first, None), first):
            try:
                found = segment.read(offset, max_bytes, limit)
            except LogClosedError:
                if offset < self.log_start_offset:  # retention deleted it meanwhile
                    raise OffsetOutOfRangeError(
                        offset, self.log_start_offset, self._log_end_offset
                    ) from None
                raise
            if found is not None:
                records, first_offset, next_offset = found
                return ReadResult(records, first_offset, next_offset, start, end)
            if i + 1 < len(segments) and offset < segments[i + 1].base_offset:
                # A sealed segment that ends short of its successor (cut or damaged on
                # disk): the offsets in between are lost, which a read must not skip.
                raise CorruptRecordError(
                    segment.path,
                    segment.size,
                    f"offsets {segment.next_offset} to {segments[i + 1].base_offset - 1} are "
                    f"missing: the segment ends at offset {segment.next_offset} but the next "
                    f"one starts at {segments[i + 1].base_offset}",
                )
        return ReadResult(b"", offset, offset, start, end)

    def iter_batch_headers(self, start_offset: int = 0) -> Iterator[BatchHeader]:
        """Stored batch headers from the batch holding `start_offset` to the current log end.

        A header scan (no CRC checks, no record decoding) for rebuilding state
        kept beside the log, such as producer sequences; the headers carry the
        stamped base offsets. Batches appended after the first item are not
        included; segments retention deletes meanwhile are skipped.
        """
        self._check_open()
        segments = self._segments
        end = self._log_end_offset
        first = max(locate_segment(segments, start_offset), 0)
        for i in range(first, len(segments)):
            segment_end = segments[i + 1].base_offset if i + 1 < len(segments) else end
            try:
                yield from segments[i].iter_headers(start_offset, min(segment_end, end))
            except LogClosedError:
                if self._closed:
                    raise
                # deleted by retention meanwhile: its batches are gone

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first batch whose max_timestamp >= timestamp_ms, or None."""
        self._check_open()
        for segment in self._segments:
            if segment.max_timestamp < timestamp_ms:
                continue
            try:
                found = segment.offset_for_timestamp(timestamp_ms)
            except LogClosedError:
                continue  # deleted by retention meanwhile
            if found is not None:
                return found
        return None
