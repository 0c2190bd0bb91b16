import itertools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from comet.records import decode_batches, stamp_batch, validate_batches
from comet.storage import CorruptRecordError
from comet.storage.segment import LogSegment, segment_name

from .support import DEFAULT_TS, make_batch

BASE = 1000


def append(segment: LogSegment, records: int = 3, value_size: int = 100, ts: int = DEFAULT_TS):
    buf = make_batch(records, value_size, timestamp_ms=ts, tag=segment.next_offset)
    headers = validate_batches(buf)
    stamp_batch(buf, 0, segment.next_offset, 0)
    segment.append(buf, headers, segment.next_offset)
    return headers[0].size


@pytest.fixture
def segment(tmp_path: Path):
    seg = LogSegment.create(tmp_path, BASE, index_interval_bytes=1000)
    yield seg
    seg.close()


def test_name_is_twenty_digits():
    assert segment_name(42) == "00000000000000000042"


def test_append_tracks_size_offsets_and_timestamps(segment):
    size = append(segment, records=3, ts=5000)
    append(segment, records=2, ts=4000)
    assert segment.next_offset == BASE + 5
    assert segment.size == Path(segment.path).stat().st_size
    assert size < segment.size
    assert segment.max_timestamp == 5000
    assert segment.first_timestamp == 5000


def test_index_entries_are_at_least_an_interval_apart(segment):
    for _ in range(30):
        append(segment, records=1, value_size=300)
    positions = [segment.offset_index.lookup(rel)[1] for rel in range(30)]
    entries = sorted(set(positions) - {0})
    assert entries
    assert entries[0] >= 1000
    assert all(b - a >= 1000 for a, b in itertools.pairwise(entries))


def test_read_starts_at_the_batch_containing_the_offset(segment):
    append(segment, records=3)
    append(segment, records=3)
    records, first, next_offset = segment.read(BASE + 4, 1 << 20, BASE + 6)
    assert first == BASE + 3
    assert next_offset == BASE + 6
    assert [r.offset for r in decode_batches(records, BASE + 4)] == [BASE + 4, BASE + 5]


def test_read_past_the_end_is_none(segment):
    append(segment)
    assert segment.read(BASE + 3, 100, BASE + 10) is None


def test_read_honours_max_offset(segment):
    append(segment, records=3)
    append(segment, records=3)
    _, first, next_offset = segment.read(BASE, 1 << 20, BASE + 3)
    assert (first, next_offset) == (BASE, BASE + 3)
    assert segment.read(BASE + 3, 1 << 20, BASE + 3) == (b"", BASE + 3, BASE + 3)


def test_offset_for_timestamp(segment):
    for i in range(20):
        append(segment, records=2, value_size=200, ts=1000 + 10 * i)
    assert segment.offset_for_timestamp(0) == BASE
    assert segment.offset_for_timestamp(1095) == BASE + 20
    assert segment.offset_for_timestamp(1190) == BASE + 38
    assert segment.offset_for_timestamp(1191) is None


def test_seal_then_load_as_sealed(segment, tmp_path):
    for i in range(20):
        append(segment, records=2, value_size=200, ts=1000 + (i * 37) % 100)
    max_ts = segment.max_timestamp
    segment.seal()
    entries = len(segment.offset_index)
    segment.close()
    with capture_logs() as logs:
        loaded = LogSegment.load(tmp_path, BASE, 1000, next_base_offset=BASE + 40)
    assert logs == []
    assert loaded.next_offset == BASE + 40
    assert loaded.max_timestamp == max_ts
    assert loaded.time_index.last_timestamp == max_ts
    assert len(loaded.offset_index) == entries
    loaded.close()


def test_sealed_segment_with_missing_index_is_rebuilt(segment, tmp_path):
    for i in range(20):
        append(segment, records=2, value_size=200, ts=1000 + i)
    segment.seal()
    entries = len(segment.offset_index)
    segment.close()
    Path(segment.offset_index.path).unlink()
    with capture_logs() as logs:
        loaded = LogSegment.load(tmp_path, BASE, 1000, next_base_offset=BASE + 40)
    assert [e["event"] for e in logs] == ["segment.index_rebuilt"]
    assert "missing" in logs[0]["reason"]
    assert len(loaded.offset_index) == entries
    assert loaded.max_timestamp == 1019
    assert Path(segment.offset_index.path).stat().st_size == entries * 8
    loaded.close()


def test_truncate_to_drops_the_containing_batch_and_later(segment):
    for _ in range(10):
        append(segment, records=3, value_size=300)
    assert segment.truncate_to(BASE + 13) == BASE + 12
    assert segment.next_offset == BASE + 12
    assert segment.size == Path(segment.path).stat().st_size
    assert all(rel < 12 for rel in segment.offset_index._rel)
    append(segment, records=1)
    records, first, _ = segment.read(BASE + 12, 1 << 20, BASE + 13)
    assert first == BASE + 12
    assert [r.offset for r in decode_batches(records)] == [BASE + 12]


def test_read_of_a_corrupt_first_batch_raises_naming_file_and_position(segment):
    size = append(segment)
    append(segment)
    with open(segment.path, "r+b") as f:
        f.seek(size + 70)
        byte = f.read(1)
        f.seek(size + 70)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptRecordError) as caught:
        segment.read(BASE + 3, 1 << 20, BASE + 6)
    assert segment.path in str(caught.value)
    assert f"byte {size}" in str(caught.value)
    with capture_logs() as logs:
        records, _, next_offset = segment.read(BASE, 1 << 20, BASE + 6)
    assert next_offset == BASE + 3
    assert len(records) == size
    assert logs[0]["event"] == "segment.corrupt_batch"
    assert logs[0]["position"] == size


def test_delete_removes_all_three_files(segment, tmp_path):
    append(segment)
    segment.delete()
    assert list(tmp_path.iterdir()) == []
