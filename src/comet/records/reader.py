"""Decoding records out of stored batches, through aiokafka's C reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from aiokafka.record.default_records import DefaultRecordBatch

from comet.records.batch import iter_batches

# aiokafka's C reader of one batch: iterating it yields record objects with
# offset, timestamp, key, value and headers (for hot loops in the client).
RecordBatchReader = DefaultRecordBatch


class Record(NamedTuple):
    """One decoded record: absolute offset, CreateTime in ms, key, value, headers."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def decode_batches(buf: bytes | bytearray | memoryview, start_offset: int = 0) -> Iterator[Record]:
    """Yield every record at or after `start_offset` in a concatenation of batches.

    A fetch returns whole batches, so the first batch may hold records below
    the offset that was asked for; they are skipped here. A partial batch at
    the end (a fetch cut by max_bytes) is ignored.
    """
    view = memoryview(buf)
    for pos, header in iter_batches(view):
        if header.next_offset <= start_offset:
            continue
        batch = DefaultRecordBatch(bytes(view[pos : pos + header.size]))
        for rec in batch:
            offset = rec.offset
            if offset >= start_offset:
                yield Record(offset, rec.timestamp, rec.key, rec.value, rec.headers)
