"""RecordSet: fetched batches as lazily decoded record sets, grouped and cut by max_records."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from comet.records import RecordSet, encode_batch, stamp_batch


def stored(sizes: list[int], base: int = 0) -> bytes:
    """Batches of `sizes` records stamped at consecutive offsets from `base`; value = offset."""
    out = bytearray()
    offset = base
    for n in sizes:
        batch = bytearray(encode_batch([(None, b"%d" % (offset + i)) for i in range(n)]))
        stamp_batch(batch, 0, offset, 0)
        out += batch
        offset += n
    return bytes(out)


def offsets(sets: list[RecordSet]) -> list[list[int]]:
    """The record offsets of each set, read by iterating it."""
    return [[r.offset for r in s] for s in sets]


def test_whole_batches_are_grouped_up_to_max_records() -> None:
    sets = RecordSet.split(stored([3, 3, 3, 3]), 0, 7)
    assert offsets(sets) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert [len(s) for s in sets] == [6, 6]
    assert [(s.first_offset, s.next_offset) for s in sets] == [(0, 6), (6, 12)]


def test_records_below_the_start_are_skipped_and_not_counted() -> None:
    [records] = RecordSet.split(stored([5, 5], base=100), 103)
    assert len(records) == 7
    assert [r.offset for r in records] == list(range(103, 110))
    assert [int(r.value) for r in records] == list(range(103, 110))
    assert (records.first_offset, records.next_offset) == (103, 110)


def test_a_batch_above_max_records_is_cut_into_pieces() -> None:
    sets = RecordSet.split(stored([2, 9, 1]), 1, 4)
    assert offsets(sets) == [[1], [2, 3, 4, 5], [6, 7, 8, 9], [10], [11]]
    assert all(len(s) <= 4 for s in sets)
    assert sets[2].next_offset == 10 and sets[2].first_offset == 6


def test_a_partial_batch_at_the_end_is_left_out() -> None:
    buf = stored([4, 4])
    sets = RecordSet.split(buf[:-10], 0)
    assert offsets(sets) == [[0, 1, 2, 3]]


def test_indexing_and_iterating_again_give_the_same_records() -> None:
    [records] = RecordSet.split(stored([3, 2]), 0)
    assert records[4].offset == 4
    assert [r.offset for r in records[1:3]] == [1, 2]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert "5 records" in repr(records)


def test_nothing_at_or_after_the_start_gives_no_set() -> None:
    assert RecordSet.split(stored([3]), 3) == []
    assert RecordSet.split(b"", 0) == []


@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    start=st.integers(0, 40),
    max_records=st.integers(0, 15),
)
def test_any_split_covers_every_record_once_in_order(
    sizes: list[int], start: int, max_records: int
) -> None:
    sets = RecordSet.split(stored(sizes), start, max_records)
    flat = [o for s in offsets(sets) for o in s]
    assert flat == list(range(start, sum(sizes)))
    assert [len(s) for s in sets] == [len(o) for o in offsets(sets)]
    if max_records:
        assert all(len(s) <= max_records for s in sets)
    for left, right in itertools.pairwise(sets):
        assert left.next_offset == right.first_offset
