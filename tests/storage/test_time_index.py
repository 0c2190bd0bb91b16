import struct

import pytest

from comet.storage.time_index import TimeIndex


@pytest.fixture
def index(tmp_path):
    idx = TimeIndex(str(tmp_path / "00000000000000000000.timeindex"), 0)
    idx.open()
    yield idx
    idx.close()


def reopen(tmp_path, max_rel):
    again = TimeIndex(str(tmp_path / "00000000000000000000.timeindex"), 0)
    problem = again.load(again.open(), max_rel)
    return again, problem


def test_appends_only_when_the_timestamp_grows(index):
    index.maybe_append(1000, 3)
    index.maybe_append(1000, 5)
    index.maybe_append(900, 7)
    index.maybe_append(1500, 9)
    assert len(index) == 2
    assert index.last_timestamp == 1500


def test_no_entry_for_missing_timestamps(index):
    index.maybe_append(-1, 3)
    assert len(index) == 0
    assert index.last_timestamp == -1


def test_lookup_returns_the_last_entry_strictly_older(index):
    index.maybe_append(1000, 3)
    index.maybe_append(2000, 9)
    assert index.lookup(500) is None
    assert index.lookup(1000) is None
    assert index.lookup(1001) == (1000, 3)
    assert index.lookup(2000) == (1000, 3)
    assert index.lookup(2001) == (2000, 9)


def test_file_format_is_big_endian_timestamp_then_rel_offset(index, tmp_path):
    index.maybe_append(1000, 3)
    index.sync()
    data = (tmp_path / "00000000000000000000.timeindex").read_bytes()
    assert data == struct.pack(">qI", 1000, 3)


def test_load_round_trips_and_checks(index, tmp_path):
    for ts, rel in [(1000, 3), (2000, 9), (3000, 15)]:
        index.maybe_append(ts, rel)
    index.sync()
    again, problem = reopen(tmp_path, max_rel=20)
    assert problem is None
    assert len(again) == 3
    again.close()
    again, problem = reopen(tmp_path, max_rel=10)
    assert "beyond the segment's last batch at 10" in problem
    assert len(again) == 2
    again.close()


def test_load_rejects_non_increasing_entries(tmp_path):
    path = tmp_path / "00000000000000000000.timeindex"
    path.write_bytes(struct.pack(">qIqIqI", 1000, 3, 900, 5, 3000, 9) + b"\x01")
    again, problem = reopen(tmp_path, max_rel=100)
    assert "not a multiple of 12" in problem
    assert len(again) == 1
    again.close()


def test_count_at_or_below_and_truncate(index):
    for ts, rel in [(1000, 3), (2000, 9), (3000, 15)]:
        index.maybe_append(ts, rel)
    assert index.count_at_or_below(9) == 2
    assert index.count_at_or_below(8) == 1
    index.truncate(1)
    assert index.last_timestamp == 1000
