"""The sparse time index of a segment (`{base_offset:020d}.timeindex`)."""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left

from comet.storage.index_file import IndexFile
from comet.storage.offset_index import increasing_prefix

_ENTRY = struct.Struct(">qI")
NO_TIMESTAMP = -1


class TimeIndex(IndexFile):
    """Maps timestamps to offsets in a segment, sparsely, for lookups by time.

    File format: no header, a flat sequence of 12-byte big-endian entries::

        offset  size  field
        0       8     max timestamp so far, ms since the epoch (int64)
        8       4     relative offset of a batch: base_offset - segment base_offset (uint32)

    Entry (T, r) says: every batch of the segment up to and including the
    batch at relative offset r has max_timestamp <= T (T is the running
    maximum at that batch). An entry is considered whenever an offset index
    entry is added and appended only when T grew since the last entry; when
    the segment is sealed at roll, one last entry records the final maximum
    at the last batch, so a sealed segment's largest timestamp is its last
    entry. Both fields are strictly increasing. Nothing is checksummed: like
    the offset index it is derived data, written to its file only after the
    log bytes it describes were fdatasynced; after a crash the longest
    consistent prefix is kept (active segment) or the index is rebuilt by
    scanning the log (sealed segment).
    """

    ENTRY_SIZE = _ENTRY.size

    def __init__(self, path: str, base_offset: int) -> None:
        super().__init__(path, base_offset)
        self._ts = array("q")
        self._rel = array("I")

    def __len__(self) -> int:
        return len(self._ts)

    def load(self, data: bytes, max_relative_offset: int) -> str | None:
        """Take the file content; keep its longest consistent prefix; say what was wrong."""
        whole = len(data) // self.ENTRY_SIZE
        problem = None
        if len(data) % self.ENTRY_SIZE:
            problem = f"size {len(data)} is not a multiple of {self.ENTRY_SIZE}"
        ts, rel = array("q"), array("I")
        for timestamp, relative in _ENTRY.iter_unpack(data[: whole * self.ENTRY_SIZE]):
            ts.append(timestamp)
            rel.append(relative)
        count = increasing_prefix(ts, rel)
        if count < whole and problem is None:
            problem = (
                f"entry {count} (timestamp {ts[count]}, relative offset {rel[count]}) "
                "does not increase on the entry before it"
            )
        inside = bisect_left(rel, max_relative_offset + 1, 0, count)
        if inside < count and problem is None:
            problem = (
                f"entry {inside} names relative offset {rel[inside]}, "
                f"beyond the segment's last batch at {max_relative_offset}"
            )
        del ts[inside:], rel[inside:]
        self._ts, self._rel = ts, rel
        self.mark_loaded(inside, len(data))
        return problem

    def maybe_append(self, max_timestamp: int, relative_offset: int) -> None:
        """Add (max_timestamp, relative_offset) if the timestamp grew since the last entry."""
        if max_timestamp > (self._ts[-1] if self._ts else NO_TIMESTAMP):
            self._ts.append(max_timestamp)
            self._rel.append(relative_offset)

    def lookup(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(timestamp, relative offset) of the last entry with a timestamp below `timestamp_ms`.

        Every batch up to that offset is older than `timestamp_ms`, so a scan
        for the first batch at or after the timestamp can start there. None
        when no entry is that old.
        """
        i = bisect_left(self._ts, timestamp_ms) - 1
        return (self._ts[i], self._rel[i]) if i >= 0 else None

    @property
    def last_timestamp(self) -> int:
        """The largest timestamp indexed, or -1 when the index is empty."""
        return self._ts[-1] if self._ts else NO_TIMESTAMP

    def count_at_or_below(self, relative_offset: int) -> int:
        """Number of entries whose relative offset is <= `relative_offset`."""
        return bisect_left(self._rel, relative_offset + 1)

    def _drop_from(self, count: int) -> None:
        del self._ts[count:], self._rel[count:]

    def _encode(self, start: int, end: int) -> bytes:
        pack = _ENTRY.pack
        return b"".join(pack(self._ts[i], self._rel[i]) for i in range(start, end))
