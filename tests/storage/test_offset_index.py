import struct

import pytest

from comet.storage.offset_index import OffsetIndex


@pytest.fixture
def index(tmp_path):
    idx = OffsetIndex(str(tmp_path / "00000000000000000100.index"), 100)
    idx.open()
    yield idx
    idx.close()


def fill(index, entries):
    for rel, pos in entries:
        index.append(rel, pos)


def reopen(tmp_path, log_size):
    again = OffsetIndex(str(tmp_path / "00000000000000000100.index"), 100)
    problem = again.load(again.open(), log_size)
    return again, problem


def test_lookup_finds_the_last_entry_at_or_below(index):
    fill(index, [(5, 4100), (9, 8300), (20, 12400)])
    assert index.lookup(0) == (0, 0)
    assert index.lookup(4) == (0, 0)
    assert index.lookup(5) == (5, 4100)
    assert index.lookup(8) == (5, 4100)
    assert index.lookup(9) == (9, 8300)
    assert index.lookup(1000) == (20, 12400)


def test_positional_queries(index):
    fill(index, [(5, 4100), (9, 8300), (20, 12400)])
    assert index.position_of_first_at_or_above(6) == 8300
    assert index.position_of_first_at_or_above(9) == 8300
    assert index.position_of_first_at_or_above(21) is None
    assert index.count_below(9) == 1
    assert index.count_below(10) == 2
    assert index.last() == (20, 12400)


def test_file_format_is_big_endian_rel_offset_then_position(index, tmp_path):
    fill(index, [(5, 4100), (9, 8300)])
    assert index.pending
    index.write_pending(1)
    data = (tmp_path / "00000000000000000100.index").read_bytes()
    assert data == struct.pack(">II", 5, 4100)
    index.sync()
    assert not index.pending
    data = (tmp_path / "00000000000000000100.index").read_bytes()
    assert data == struct.pack(">IIII", 5, 4100, 9, 8300)


def test_load_round_trips(index, tmp_path):
    fill(index, [(5, 4100), (9, 8300), (20, 12400)])
    index.sync()
    again, problem = reopen(tmp_path, log_size=20000)
    assert problem is None
    assert len(again) == 3
    assert again.lookup(10) == (9, 8300)
    again.close()


def test_load_cuts_a_torn_entry(index, tmp_path):
    fill(index, [(5, 4100), (9, 8300)])
    index.sync()
    with open(index.path, "ab") as f:
        f.write(b"\x00\x00\x00")
    again, problem = reopen(tmp_path, log_size=20000)
    assert "not a multiple of 8" in problem
    assert len(again) == 2
    assert (tmp_path / "00000000000000000100.index").stat().st_size == 16
    again.close()


def test_load_keeps_the_increasing_prefix(index, tmp_path):
    fill(index, [(5, 4100), (9, 8300), (7, 9000), (30, 16000)])
    index.sync()
    again, problem = reopen(tmp_path, log_size=20000)
    assert "entry 2" in problem
    assert len(again) == 2
    again.close()


def test_load_drops_entries_beyond_the_log(index, tmp_path):
    fill(index, [(5, 4100), (9, 8300), (20, 12400)])
    index.sync()
    again, problem = reopen(tmp_path, log_size=8300)
    assert "beyond the log's 8300 bytes" in problem
    assert again.last() == (5, 4100)
    again.close()


def test_truncate_cuts_memory_and_file(index, tmp_path):
    fill(index, [(5, 4100), (9, 8300), (20, 12400)])
    index.sync()
    index.truncate(1)
    assert len(index) == 1
    assert (tmp_path / "00000000000000000100.index").stat().st_size == 8
    index.append(6, 5000)
    index.sync()
    again, problem = reopen(tmp_path, log_size=20000)
    assert problem is None
    assert again.last() == (6, 5000)
    again.close()


def test_rewrite_replaces_the_file(index, tmp_path):
    fill(index, [(5, 4100)])
    index.write_pending(1)
    index.truncate(0)
    fill(index, [(1, 100), (2, 200)])
    index.rewrite()
    assert not (tmp_path / "00000000000000000100.index.tmp").exists()
    again, problem = reopen(tmp_path, log_size=20000)
    assert problem is None
    assert len(again) == 2
    again.close()


def test_delete_removes_the_file(index, tmp_path):
    index.delete()
    assert not (tmp_path / "00000000000000000100.index").exists()
