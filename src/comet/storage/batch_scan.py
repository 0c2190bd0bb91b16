"""Walking the stored batches of a log file: framing, offset and CRC checks over chunked preads.

These loops run once per stored batch (reads, recovery, index rebuilds), so
they unpack only the header fields they need (layout in comet.records.batch)
instead of building a full BatchHeader.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c

from comet.records import BATCH_HEADER_SIZE, LOG_OVERHEAD
from comet.records.batch import CRC_START, MAGIC
from comet.storage.errors import LogReadError, io_error

SCAN_CHUNK = 1 << 20  # recovery and index rebuilds read 1 MiB at a time
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD

# base_offset, batch_length, magic, crc, last_offset_delta, max_timestamp
_FRAME = struct.Struct(">qi4xbI2xi8xq")
unpack_frame = _FRAME.unpack_from


class StoredBatch(NamedTuple):
    """Where one stored batch is and the header fields storage needs."""

    position: int
    base_offset: int
    next_offset: int
    size: int
    max_timestamp: int


def frame_problem(
    base_offset: int,
    batch_length: int,
    magic: int,
    last_offset_delta: int,
    available: int,
    expected_offset: int,
) -> str | None:
    """Why a stored batch with these header fields is not well framed, or None.

    `available` counts the bytes from the batch start to the end of the data;
    `expected_offset` is the base offset that keeps offsets contiguous.
    """
    if batch_length < MIN_BATCH_LENGTH:
        return f"batch_length {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
    if batch_length + LOG_OVERHEAD > available:
        return f"partial batch: {batch_length + LOG_OVERHEAD} bytes framed, {available} present"
    if magic != MAGIC:
        return f"magic {magic} is not {MAGIC}"
    if base_offset != expected_offset:
        return f"base_offset {base_offset} breaks the sequence (expected {expected_offset})"
    if last_offset_delta < 0:
        return f"last_offset_delta {last_offset_delta} is negative"
    return None


def crc_problem(buf: bytes | memoryview, pos: int, size: int, crc: int) -> str | None:
    """Why the `size`-byte batch at `pos` of `buf` fails its CRC-32C `crc`, or None."""
    actual = crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size])
    if actual != crc:
        return f"CRC-32C mismatch: header {crc:#010x}, computed {actual:#010x}"
    return None


class BatchScanner:
    """Iterates the StoredBatch entries of a file region, stopping at the first bad batch.

    Reads the region [start, end) of `fd` with preads of `chunk_size` bytes
    (more when one batch is larger). A batch is good when it is completely
    inside the region, well framed, has the next expected base offset and,
    with `verify_crc`, a matching CRC-32C. After a full iteration `position`
    is the end of the last good batch, `next_offset` the offset after it and
    `problem` says why the scan stopped before `end` (None if it reached it).
    The caller keeps the file open meanwhile; a failing pread raises
    LogReadError naming `path`.
    """

    __slots__ = ("_chunk", "_crc", "_end", "_fd", "_path", "next_offset", "position", "problem")

    def __init__(
        self,
        fd: int,
        path: str,
        start: int,
        end: int,
        next_offset: int,
        *,
        verify_crc: bool,
        chunk_size: int = SCAN_CHUNK,
    ) -> None:
        self._fd = fd
        self._path = path
        self._end = end
        self._crc = verify_crc
        self._chunk = chunk_size
        self.position = start
        self.next_offset = next_offset
        self.problem: str | None = None

    def __iter__(self) -> Iterator[StoredBatch]:
        end, chunk, verify = self._end, self._chunk, self._crc
        pos, expected = self.position, self.next_offset
        buf = b""
        buf_start = pos
        while pos < end:
            if end - pos < BATCH_HEADER_SIZE:
                self.problem = f"partial batch header: {end - pos} bytes"
                return
            off = pos - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                buf = self._pread(min(chunk, end - pos), pos)
                buf_start, off = pos, 0
                if len(buf) < BATCH_HEADER_SIZE:
                    self.problem = f"file ends {len(buf)} bytes after position {pos}"
                    return
            base, length, magic, crc, delta, max_ts = unpack_frame(buf, off)
            size = length + LOG_OVERHEAD
            if (
                length < MIN_BATCH_LENGTH
                or size > end - pos
                or magic != MAGIC
                or base != expected
                or delta < 0
            ):
                self.problem = frame_problem(base, length, magic, delta, end - pos, expected)
                return
            if verify:
                if off + size > len(buf):
                    buf = self._pread(max(chunk, size), pos)
                    buf_start, off = pos, 0
                    if len(buf) < size:
                        self.problem = f"file ends {len(buf)} bytes after position {pos}"
                        return
                problem = crc_problem(buf, off, size, crc)
                if problem is not None:
                    self.problem = problem
                    return
            expected = base + delta + 1
            yield StoredBatch(pos, base, expected, size, max_ts)
            pos += size
            self.position, self.next_offset = pos, expected

    def _pread(self, size: int, pos: int) -> bytes:
        try:
            return os.pread(self._fd, size, pos)
        except OSError as exc:
            raise io_error(LogReadError, exc, "reading", self._path) from exc


def valid_prefix(data: bytes, first_offset: int, max_offset: int) -> tuple[int, int, str | None]:
    """Measure the whole, CRC-valid batches at the start of `data`, below `max_offset`.

    Returns (length, next_offset, problem): the bytes of good batches, the
    offset after them, and why the batch at `length` is corrupt (None when
    the walk stopped at the end, at `max_offset` or at a batch cut short by
    the end of `data`). The first batch is always checked whole.
    """
    end = len(data)
    off = 0
    expected = first_offset
    while end - off >= BATCH_HEADER_SIZE:
        base, length, magic, crc, delta, _ = unpack_frame(data, off)
        size = length + LOG_OVERHEAD
        if off > 0 and (base >= max_offset or size > end - off):
            break  # above the bound, or cut by max_bytes: the next read checks it whole
        if length < MIN_BATCH_LENGTH or magic != MAGIC or base != expected or delta < 0:
            problem = frame_problem(base, length, magic, delta, end - off, expected)
        else:
            problem = crc_problem(data, off, size, crc)
        if problem is not None:
            return off, expected, problem
        off += size
        expected = base + delta + 1
    return off, expected, None
