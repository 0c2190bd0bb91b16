"""Decoding records out of stored batches, through aiokafka's C reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, overload

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
    new = tuple.__new__  # skips the namedtuple's Python-level __new__ (hot path)
    for records in RecordSet.split(buf, start_offset):
        for rec in records:
            yield new(Record, (rec.offset, rec.timestamp, rec.key, rec.value, rec.headers))


class _Span(NamedTuple):
    position: int
    size: int
    base_offset: int
    next_offset: int


class RecordSet:
    """The records of whole fetched batches, decoded only while they are iterated.

    Holds the fetched bytes and the position of each batch, not one object
    per record: iterating yields the C reader's record views (attributes
    offset, timestamp in ms, key, value, headers), batch by batch, and
    keeps none of them. `len()` comes from the batch headers. Indexing
    works too, but decodes the whole set once and keeps the records. A
    set cut out of one batch larger than `max_records` (see `split`) holds
    its decoded records instead.
    """

    __slots__ = ("_count", "_decoded", "_next", "_spans", "_start", "_view")

    def __init__(
        self,
        view: memoryview,
        spans: list[_Span],
        start_offset: int,
        decoded: list[Any] | None = None,
    ) -> None:
        self._view = view
        self._spans = spans
        self._decoded = decoded
        if decoded is not None:
            self._start = decoded[0].offset if decoded else start_offset
            self._count = len(decoded)
            self._next = decoded[-1].offset + 1 if decoded else start_offset
        else:
            self._start = start_offset
            self._count = sum(s.next_offset - max(s.base_offset, start_offset) for s in spans)
            self._next = spans[-1].next_offset if spans else start_offset

    @classmethod
    def split(
        cls, buf: bytes | bytearray | memoryview, start_offset: int = 0, max_records: int = 0
    ) -> list[RecordSet]:
        """The whole batches of `buf` holding offsets >= start_offset, as record sets.

        With `max_records` > 0 no set holds more records than that:
        consecutive batches are grouped up to it, and a batch holding more
        is decoded once and cut into pieces. A partial batch at the end (a
        fetch cut by max_bytes) is left out.
        """
        view = memoryview(buf)
        out: list[RecordSet] = []
        spans: list[_Span] = []
        count = 0
        for pos, header in iter_batches(view):
            nxt = header.next_offset
            if nxt <= start_offset:
                continue
            n = nxt - max(header.base_offset, start_offset)
            span = _Span(pos, header.size, header.base_offset, nxt)
            if spans and max_records and count + n > max_records:
                out.append(cls(view, spans, start_offset))
                spans, count = [], 0
            if max_records and n > max_records:
                records = list(cls(view, [span], start_offset))
                out += [
                    cls(view, [], start_offset, records[i : i + max_records])
                    for i in range(0, len(records), max_records)
                ]
                continue
            spans.append(span)
            count += n
        if spans:
            out.append(cls(view, spans, start_offset))
        return out

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        if self._decoded is not None:
            yield from self._decoded
            return
        view, start = self._view, self._start
        for pos, size, base, _ in self._spans:
            reader = RecordBatchReader(view[pos : pos + size])
            if base >= start:
                yield from reader
            else:
                for rec in reader:
                    if rec.offset >= start:
                        yield rec

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if self._decoded is None:
            self._decoded = list(self)
        return self._decoded[index]

    @property
    def first_offset(self) -> int:
        """Offset of the first record of the set."""
        if self._spans and self._decoded is None:
            return max(self._spans[0].base_offset, self._start)
        return self._start

    @property
    def next_offset(self) -> int:
        """Offset after the last record of the set."""
        return self._next

    def __repr__(self) -> str:
        return f"RecordSet({self._count} records, offsets {self.first_offset}..{self.next_offset})"
