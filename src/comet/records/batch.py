"""RecordBatch v2 header: parse, validate and stamp without touching records.

Byte layout of one batch (big-endian, Kafka magic 2)::

    offset  size  field
    0       8     base_offset            stamped by the broker
    8       4     batch_length           bytes that follow this field
    12      4     partition_leader_epoch stamped by the broker
    16      1     magic                  always 2
    17      4     crc                    CRC-32C of bytes 21..end
    21      2     attributes             bits 0-2 compression codec, 3 timestamp
                                         type, 4 transactional, 5 control
    23      4     last_offset_delta      record_count - 1 for produced batches
    27      8     first_timestamp        ms since the epoch
    35      8     max_timestamp          ms since the epoch
    43      8     producer_id            -1 when not idempotent
    51      2     producer_epoch
    53      4     base_sequence
    57      4     record_count
    61      ...   records (possibly compressed)

The CRC excludes base_offset and partition_leader_epoch, so the broker can
stamp both without recomputing it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c

_HEADER = struct.Struct(">qiibIhiqqqhii")
BATCH_HEADER_SIZE = _HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + batch_length: the bytes before batch_length counts
MAGIC = 2
CRC_START = 21
_STAMP = struct.Struct(">q")
_EPOCH = struct.Struct(">i")
_LENGTH = struct.Struct(">i")
MAX_CODEC = 4  # zstd
ATTR_CODEC_MASK = 0x07
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20


class InvalidBatchError(ValueError):
    """Bytes that are not a well-formed, CRC-valid RecordBatch v2 sequence."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at byte {position})")
        self.position = position


class BatchHeader(NamedTuple):
    """The fixed 61-byte header of one batch."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch including the 12-byte log overhead."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def last_offset(self) -> int:
        """Offset of the last record in the batch."""
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """Offset that follows this batch."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        """Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)."""
        return self.attributes & ATTR_CODEC_MASK


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header of the batch starting at `pos` (no validation)."""
    return BatchHeader(*_HEADER.unpack_from(buf, pos))


def batch_size_at(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """Total size of the batch at `pos` from its length field, or -1 if too short to tell."""
    if len(buf) - pos < LOG_OVERHEAD:
        return -1
    return LOG_OVERHEAD + _LENGTH.unpack_from(buf, pos + 8)[0]


def check_batch(buf: bytes | bytearray | memoryview, pos: int, end: int) -> BatchHeader:
    """Validate the batch at `pos` (bounds, magic, CRC) and return its header.

    Raises InvalidBatchError naming the rule that failed.
    """
    if end - pos < BATCH_HEADER_SIZE:
        raise InvalidBatchError(
            f"truncated batch: {end - pos} bytes left, a header needs {BATCH_HEADER_SIZE}", pos
        )
    header = parse_header(buf, pos)
    size = header.size
    if size < BATCH_HEADER_SIZE:
        raise InvalidBatchError(f"batch_length {header.batch_length} is below the minimum", pos)
    if pos + size > end:
        raise InvalidBatchError(
            f"truncated batch: batch_length says {size} bytes, {end - pos} present", pos
        )
    if header.magic != MAGIC:
        raise InvalidBatchError(f"magic {header.magic} is not supported (must be 2)", pos)
    actual = crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size])
    if actual != header.crc:
        raise InvalidBatchError(
            f"CRC-32C mismatch: header {header.crc:#010x}, computed {actual:#010x}", pos
        )
    return header


def validate_batches(
    buf: bytes | bytearray | memoryview, *, producer: bool = True
) -> list[BatchHeader]:
    """Validate a concatenation of batches and return their headers.

    With `producer=True` the rules for batches arriving from a producer apply:
    at least one record, record_count == last_offset_delta + 1, a known
    compression codec, no control or transactional batches.
    """
    end = len(buf)
    if end == 0:
        raise InvalidBatchError("no record batch in request", 0)
    pos = 0
    headers = []
    while pos < end:
        header = check_batch(buf, pos, end)
        if producer:
            if header.record_count < 1:
                raise InvalidBatchError(f"record_count {header.record_count} must be >= 1", pos)
            if header.last_offset_delta != header.record_count - 1:
                raise InvalidBatchError(
                    f"last_offset_delta {header.last_offset_delta} must be record_count - 1 "
                    f"({header.record_count - 1})",
                    pos,
                )
            if header.compression > MAX_CODEC:
                raise InvalidBatchError(f"unknown compression codec {header.compression}", pos)
            if header.attributes & (ATTR_CONTROL | ATTR_TRANSACTIONAL):
                raise InvalidBatchError("control and transactional batches are not supported", pos)
        headers.append(header)
        pos += header.size
    return headers


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each complete batch; stop at a partial tail."""
    pos = 0
    end = len(buf)
    while end - pos >= BATCH_HEADER_SIZE:
        header = parse_header(buf, pos)
        if header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD or pos + header.size > end:
            return
        yield pos, header
        pos += header.size


def stamp_batch(buf: bytearray | memoryview, pos: int, base_offset: int, leader_epoch: int) -> None:
    """Write base_offset and partition_leader_epoch into the batch at `pos` in place."""
    _STAMP.pack_into(buf, pos, base_offset)
    _EPOCH.pack_into(buf, pos + 12, leader_epoch)
