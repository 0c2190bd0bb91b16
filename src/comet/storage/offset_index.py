"""The sparse offset index of a segment (`{base_offset:020d}.index`)."""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from itertools import islice
from operator import lt

from comet.storage.index_file import IndexFile

_SWAP = sys.byteorder == "little"  # the file is big-endian, `array` is native
MAX_RELATIVE_OFFSET = (1 << 32) - 1  # entries hold relative offsets as uint32


def increasing_prefix(*columns: array) -> int:
    """Length of the longest prefix over which every column is strictly increasing."""
    count = len(columns[0])
    if all(all(map(lt, col, islice(col, 1, None))) for col in columns):
        return count
    for i in range(1, count):
        if any(col[i] <= col[i - 1] for col in columns):
            return i
    return count


class OffsetIndex(IndexFile):
    """Maps offsets to byte positions in the segment's .log file, sparsely.

    File format: no header, a flat sequence of 8-byte big-endian entries::

        offset  size  field
        0       4     relative offset: batch base_offset - segment base_offset (uint32)
        4       4     position: byte position of that batch in the .log file (uint32)

    An entry is added for the first batch that starts at least
    index_interval_bytes after the previous entry (the segment start counts
    as an implicit entry at position 0), so lookups scan at most about one
    interval of log. Entries are strictly increasing in both fields and every
    position is below the log file's size. Nothing is checksummed: the index
    is derived data. After a crash the file holds a prefix of the entries,
    perhaps with a torn last entry: loading keeps the longest consistent
    prefix, and a sealed segment whose index is not fully consistent gets
    it rebuilt by scanning its log.
    """

    ENTRY_SIZE = 8

    def __init__(self, path: str, base_offset: int) -> None:
        super().__init__(path, base_offset)
        self._rel = array("I")
        self._pos = array("I")

    def __len__(self) -> int:
        return len(self._rel)

    def load(self, data: bytes, log_size: int) -> str | None:
        """Take the file content; keep its longest consistent prefix; say what was wrong."""
        whole = len(data) // self.ENTRY_SIZE
        problem = None
        if len(data) % self.ENTRY_SIZE:
            problem = f"size {len(data)} is not a multiple of {self.ENTRY_SIZE}"
        raw = array("I")
        raw.frombytes(data[: whole * self.ENTRY_SIZE])
        if _SWAP:
            raw.byteswap()
        rel, pos = raw[0::2], raw[1::2]
        count = increasing_prefix(rel, pos)
        if count < whole and problem is None:
            problem = (
                f"entry {count} (relative offset {rel[count]}, position {pos[count]}) "
                "does not increase on the entry before it"
            )
        inside = bisect_left(pos, log_size, 0, count)
        if inside < count and problem is None:
            problem = (
                f"entry {inside} points at position {pos[inside]}, "
                f"beyond the log's {log_size} bytes"
            )
        del rel[inside:], pos[inside:]
        self._rel, self._pos = rel, pos
        self.mark_loaded(inside, len(data))
        return problem

    def append(self, relative_offset: int, position: int) -> None:
        """Add an entry (the caller keeps both fields increasing)."""
        self._rel.append(relative_offset)
        self._pos.append(position)

    def lookup(self, relative_offset: int) -> tuple[int, int]:
        """(relative offset, position) of the last entry at or below `relative_offset` or (0, 0)."""
        i = bisect_right(self._rel, relative_offset) - 1
        if i < 0:
            return 0, 0
        return self._rel[i], self._pos[i]

    def position_of_first_at_or_above(self, relative_offset: int) -> int | None:
        """Position of the first entry whose relative offset is >= `relative_offset`, if any."""
        i = bisect_left(self._rel, relative_offset)
        return self._pos[i] if i < len(self._pos) else None

    def count_below(self, relative_offset: int) -> int:
        """Number of entries whose relative offset is below `relative_offset`."""
        return bisect_left(self._rel, relative_offset)

    def last(self) -> tuple[int, int] | None:
        """The last entry, or None when the index is empty."""
        if not self._rel:
            return None
        return self._rel[-1], self._pos[-1]

    def _drop_from(self, count: int) -> None:
        del self._rel[count:], self._pos[count:]

    def _encode(self, start: int, end: int) -> bytes:
        out = array("I", bytes(self.ENTRY_SIZE * (end - start)))
        out[0::2] = self._rel[start:end]
        out[1::2] = self._pos[start:end]
        if _SWAP:
            out.byteswap()
        return out.tobytes()
