from pathlib import Path

import pytest

from comet.records import decode_batches, encode_batch, parse_header, validate_batches
from comet.storage import (
    InvalidOffsetError,
    LogClosedError,
    LogConfig,
    OffsetOutOfRangeError,
    PartitionLog,
    RecordTooLargeError,
)

from .support import DEFAULT_TS, batch_headers, make_batch, produce, read_all

SMALL = LogConfig(segment_bytes=1024, index_interval_bytes=128)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "topic" / "0"


@pytest.fixture
def log(log_dir):
    plog = PartitionLog.open(log_dir, SMALL, now_ms=lambda: DEFAULT_TS)
    yield plog
    plog.close()


def log_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".log")


# --- opening ---------------------------------------------------------------------------------


def test_open_creates_the_directory_and_an_empty_log(log, log_dir):
    assert log_dir.is_dir()
    assert (log.log_start_offset, log.log_end_offset, log.flushed_offset) == (0, 0, 0)
    assert log.segment_count == 1
    assert log.size_bytes == 0
    assert log_files(log_dir) == ["00000000000000000000.log"]
    assert {p.name for p in log_dir.iterdir()} >= {
        "00000000000000000000.index",
        "00000000000000000000.timeindex",
    }


def test_reopen_keeps_everything(log, log_dir):
    for i in range(30):
        produce(log, records=2, value_size=50, tag=i)
    before = read_all(log)
    log.close()
    again = PartitionLog.open(log_dir, SMALL)
    assert again.log_end_offset == 60
    assert again.flushed_offset == 60
    assert again.segment_count == log.segment_count
    assert read_all(again) == before
    again.close()


# --- appending -------------------------------------------------------------------------------


def test_append_assigns_consecutive_offsets_and_stamps_them(log):
    first = produce(log, records=3, timestamp_ms=5000, leader_epoch=7)
    second = produce(log, records=2, timestamp_ms=6000, leader_epoch=8)
    assert first.base_offset == 0
    assert first.last_offset == 2
    assert first.record_count == 3
    assert first.max_timestamp == 5000
    assert second.base_offset == 3
    assert second.last_offset == 4
    assert log.log_end_offset == 5
    headers = batch_headers(log.read(0, 1 << 20).records)
    assert [(h.base_offset, h.partition_leader_epoch) for h in headers] == [(0, 7), (3, 8)]


def test_append_of_several_batches_in_one_buffer(log):
    buf = make_batch(2, tag=1) + make_batch(3, tag=2) + make_batch(1, tag=3)
    info = log.append(buf, validate_batches(buf), 1)
    assert (info.base_offset, info.last_offset, info.record_count) == (0, 5, 6)
    assert info.size == len(buf)
    assert [h.base_offset for h in batch_headers(log.read(0, 1 << 20).records)] == [0, 2, 5]
    assert [r.key for r in read_all(log)][2] == b"k2-0"


def test_append_stamps_the_callers_buffer_in_place(log):
    produce(log, records=4)
    buf = make_batch(1)
    log.append(buf, validate_batches(buf), 2)
    assert parse_header(buf).base_offset == 4
    assert parse_header(buf).partition_leader_epoch == 2


def test_append_rejects_oversized_requests(log_dir):
    plog = PartitionLog.open(log_dir, LogConfig(max_message_bytes=100))
    buf = make_batch(3, 100)
    with pytest.raises(RecordTooLargeError, match=r"max\.message\.bytes=100"):
        plog.append(buf, validate_batches(buf), 0)
    assert plog.log_end_offset == 0
    plog.close()


def test_append_requires_headers_matching_the_buffer(log):
    buf = make_batch(1)
    with pytest.raises(ValueError, match="headers cover"):
        log.append(buf + make_batch(1), validate_batches(buf), 0)
    with pytest.raises(ValueError, match="at least one batch"):
        log.append(bytearray(), [], 0)


def test_append_stamped_requires_contiguous_offsets(log):
    produce(log, records=2)
    follower_copy = bytearray(log.read(0, 1 << 20).records)
    with pytest.raises(InvalidOffsetError, match="has base_offset 0, expected 2"):
        log.append_stamped(follower_copy, batch_headers(follower_copy))
    buf = make_batch(3)
    buf[0:8] = (2).to_bytes(8, "big")
    info = log.append_stamped(bytes(buf), batch_headers(bytes(buf)))
    assert (info.base_offset, info.last_offset) == (2, 4)
    bad = make_batch(1)
    bad[0:8] = (9).to_bytes(8, "big")
    with pytest.raises(InvalidOffsetError, match="expected 5"):
        log.append_stamped(bytes(bad), batch_headers(bytes(bad)))
    assert log.log_end_offset == 5


def test_segments_roll_by_size_and_reads_cross_them(log, log_dir):
    for i in range(40):
        produce(log, records=2, value_size=60, tag=i)
    assert log.segment_count > 3
    assert len(log_files(log_dir)) == log.segment_count
    assert all(
        (log_dir / name).stat().st_size <= SMALL.segment_bytes for name in log_files(log_dir)
    )
    assert log.size_bytes == sum((log_dir / n).stat().st_size for n in log_files(log_dir))
    records = read_all(log, max_bytes=700)
    assert [r.offset for r in records] == list(range(80))
    assert records[9].key == b"k4-1"


def test_a_single_append_larger_than_a_segment_gets_its_own_segment(log):
    produce(log, records=1)
    info = produce(log, records=1, value_size=3000)
    assert log.segment_count == 2
    assert info.base_offset == 1
    assert read_all(log)[1].value.startswith(b"v0-0-")


def test_segments_roll_by_batch_timestamp_age(log_dir):
    plog = PartitionLog.open(log_dir, LogConfig(segment_ms=1000))
    produce(plog, timestamp_ms=10_000)
    produce(plog, timestamp_ms=10_900)
    assert plog.segment_count == 1
    produce(plog, timestamp_ms=11_001)
    assert plog.segment_count == 2
    produce(plog, timestamp_ms=5_000)  # older data does not roll again
    assert plog.segment_count == 2
    plog.close()


def test_update_config_applies_to_later_appends(log):
    log.update_config(LogConfig(segment_bytes=1 << 20))
    for i in range(40):
        produce(log, records=2, value_size=60, tag=i)
    assert log.segment_count == 1
    assert log.config.segment_bytes == 1 << 20


# --- reading ---------------------------------------------------------------------------------


@pytest.fixture
def filled(log):
    """Ten batches of three records: offsets 0..29, batch bases 0, 3, 6, ..."""
    for i in range(10):
        produce(log, records=3, value_size=20, tag=i, timestamp_ms=1000 + 100 * i)
    return log


def test_read_returns_the_batch_containing_the_offset(filled):
    result = filled.read(4, 1 << 20)
    assert result.first_offset == 3
    assert result.next_offset > 4
    assert [r.offset for r in decode_batches(result.records, 4)][:2] == [4, 5]
    assert (result.log_start_offset, result.log_end_offset) == (0, 30)


def test_read_stops_before_exceeding_max_bytes(filled):
    size = len(filled.read(0, 1).records)
    assert len(batch_headers(filled.read(0, 1).records)) == 1
    assert len(batch_headers(filled.read(0, 2 * size).records)) == 2
    assert len(batch_headers(filled.read(0, 2 * size + size // 2).records)) == 2
    assert len(batch_headers(filled.read(0, 0).records)) == 1


def test_read_never_returns_batches_at_or_above_max_offset(filled):
    result = filled.read(0, 1 << 20, max_offset=7)
    assert [h.base_offset for h in batch_headers(result.records)] == [0, 3, 6]
    assert result.next_offset == 9
    result = filled.read(3, 1 << 20, max_offset=3)
    assert (result.records, result.first_offset, result.next_offset) == (b"", 3, 3)
    assert filled.read(10, 1 << 20, max_offset=5).records == b""


def test_read_at_the_log_end_is_empty(filled):
    result = filled.read(30, 1 << 20)
    assert result.records == b""
    assert result.next_offset == 30


def test_read_out_of_range_names_the_valid_range(filled):
    with pytest.raises(OffsetOutOfRangeError) as caught:
        filled.read(31, 100)
    assert caught.value.offset == 31
    assert "[0, 30)" in str(caught.value)
    with pytest.raises(OffsetOutOfRangeError):
        filled.read(-1, 100)


def test_read_of_an_offset_below_log_start_after_retention(log):
    for i in range(40):
        produce(log, records=2, value_size=60, tag=i)
    log.update_config(LogConfig(segment_bytes=1024, retention_bytes=0))
    assert log.apply_retention() > 0
    assert log.log_start_offset > 0
    with pytest.raises(OffsetOutOfRangeError, match=f"\\[{log.log_start_offset}, 80\\)"):
        log.read(0, 100)


def test_reads_at_every_offset_across_segments(log):
    for i in range(25):
        produce(log, records=1 + i % 3, value_size=40 + i * 3, tag=i)
    expected = read_all(log)
    for offset in range(log.log_end_offset):
        result = log.read(offset, 300)
        decoded = list(decode_batches(result.records, offset))
        assert decoded[0] == expected[offset]
        assert result.first_offset <= offset < result.next_offset


# --- offset_for_timestamp ----------------------------------------------------------------------


def test_offset_for_timestamp(filled):
    assert filled.offset_for_timestamp(0) == 0
    assert filled.offset_for_timestamp(1000) == 0
    assert filled.offset_for_timestamp(1001) == 3
    assert filled.offset_for_timestamp(1450) == 15
    assert filled.offset_for_timestamp(1900) == 27
    assert filled.offset_for_timestamp(1901) is None


def test_offset_for_timestamp_with_unordered_timestamps_across_segments(log, log_dir):
    stamps = [500, 100, 900, 300, 1200, 700, 1500, 50] * 5
    for i, ts in enumerate(stamps):
        produce(log, records=1, value_size=150, tag=i, timestamp_ms=ts)
    assert log.segment_count > 2
    for target in (0, 100, 501, 901, 1201, 1500):
        expected = next(i for i, ts in enumerate(stamps) if ts >= target)
        assert log.offset_for_timestamp(target) == expected
    log.close()
    again = PartitionLog.open(log_dir, SMALL)
    assert again.offset_for_timestamp(1201) == 6
    assert again.offset_for_timestamp(1501) is None
    again.close()


# --- retention -----------------------------------------------------------------------------


def test_retention_by_size_keeps_at_least_retention_bytes(log):
    for i in range(60):
        produce(log, records=2, value_size=60, tag=i)
    segments, total = log.segment_count, log.size_bytes
    log.update_config(LogConfig(segment_bytes=1024, retention_bytes=3000))
    deleted = log.apply_retention()
    assert deleted > 0
    assert log.segment_count == segments - deleted
    assert log.size_bytes >= 3000
    assert log.size_bytes < total
    first = log.read(log.log_start_offset, 1 << 20)
    assert first.first_offset == log.log_start_offset
    assert [r.offset for r in read_all(log)] == list(range(log.log_start_offset, 120))
    assert log.apply_retention() == 0


def test_retention_never_deletes_the_active_segment(log):
    for i in range(20):
        produce(log, records=2, value_size=60, tag=i)
    log.update_config(LogConfig(segment_bytes=1024, retention_bytes=0, retention_ms=0))
    log.apply_retention()
    assert log.segment_count == 1
    assert log.log_start_offset == log._segments[-1].base_offset
    produce(log)
    assert read_all(log)[-1].offset == 40


def test_retention_by_time_uses_the_newest_timestamp_of_each_segment(log_dir):
    now = [10_000]
    config = LogConfig(segment_bytes=1024, retention_ms=1000)
    plog = PartitionLog.open(log_dir, config, now_ms=lambda: now[0])
    for i in range(30):
        produce(plog, records=1, value_size=200, tag=i, timestamp_ms=1000 + 100 * i)
    segments = list(plog._segments)
    assert len(segments) > 3
    now[0] = segments[1].max_timestamp + 1001
    assert plog.apply_retention() == 2
    assert plog.log_start_offset == segments[2].base_offset
    assert plog.apply_retention() == 0
    now[0] = 10**12
    assert plog.apply_retention() == len(segments) - 3
    assert plog.segment_count == 1
    plog.close()


def test_unlimited_retention_deletes_nothing(log):
    for i in range(30):
        produce(log, records=2, value_size=60, tag=i, timestamp_ms=1)
    log.update_config(LogConfig(segment_bytes=1024, retention_bytes=-1, retention_ms=-1))
    assert log.apply_retention() == 0


# --- truncate_to --------------------------------------------------------------------------------


@pytest.fixture
def rolled(log):
    """Twenty batches of three records over several segments."""
    for i in range(20):
        produce(log, records=3, value_size=60, tag=i)
    assert log.segment_count >= 3
    return log


def bases(plog):
    return [s.base_offset for s in plog._segments]


def test_truncate_at_or_beyond_the_end_is_a_no_op(rolled):
    before = bases(rolled)
    rolled.truncate_to(60)
    rolled.truncate_to(100)
    assert rolled.log_end_offset == 60
    assert bases(rolled) == before


def test_truncate_at_a_batch_boundary(rolled, log_dir):
    segments = bases(rolled)
    rolled.flush()
    rolled.truncate_to(30)
    assert rolled.log_end_offset == 30
    assert rolled.flushed_offset == 30
    assert all(b <= 30 for b in bases(rolled))
    assert log_files(log_dir) == [f"{b:020d}.log" for b in bases(rolled)]
    assert len(bases(rolled)) < len(segments)
    info = produce(rolled, records=2, tag=99)
    assert info.base_offset == 30
    rolled.close()
    again = PartitionLog.open(log_dir, SMALL)
    records = read_all(again)
    assert [r.offset for r in records] == list(range(32))
    assert records[30].key == b"k99-0"
    again.close()


def test_truncate_inside_a_batch_drops_the_whole_batch(rolled):
    rolled.truncate_to(31)
    assert rolled.log_end_offset == 30
    assert read_all(rolled)[-1].offset == 29


def test_truncate_at_a_segment_base_empties_that_segment(rolled, log_dir):
    second = bases(rolled)[1]
    rolled.truncate_to(second)
    assert rolled.log_end_offset == second
    assert bases(rolled)[-1] == second
    assert rolled._segments[-1].size == 0
    produce(rolled, tag=7)
    assert read_all(rolled)[-1].offset == second


def test_truncate_to_the_log_start_empties_the_log(rolled):
    rolled.truncate_to(0)
    assert (rolled.log_start_offset, rolled.log_end_offset, rolled.segment_count) == (0, 0, 1)
    assert produce(rolled).base_offset == 0


def test_truncate_below_the_log_start_restarts_the_log_there(rolled, log_dir):
    rolled.update_config(LogConfig(segment_bytes=1024, retention_bytes=0))
    rolled.apply_retention()
    start = rolled.log_start_offset
    assert start > 10
    rolled.truncate_to(5)
    assert (rolled.log_start_offset, rolled.log_end_offset, rolled.segment_count) == (5, 5, 1)
    assert log_files(log_dir) == ["00000000000000000005.log"]
    assert produce(rolled).base_offset == 5
    rolled.close()
    again = PartitionLog.open(log_dir, SMALL)
    assert (again.log_start_offset, again.log_end_offset) == (5, 6)
    again.close()


# --- lifecycle ----------------------------------------------------------------------------------


def test_flush_advances_flushed_offset(log):
    produce(log, records=5)
    assert log.flushed_offset == 0
    log.flush()
    assert log.flushed_offset == 5


def test_close_is_idempotent_and_later_calls_fail(log):
    produce(log)
    log.close()
    log.close()
    assert log.flushed_offset == 1
    for call in (lambda: produce(log), lambda: log.read(0, 10), log.flush):
        with pytest.raises(LogClosedError, match="closed"):
            call()
    assert log.apply_retention() == 0


def test_delete_removes_the_directory(log, log_dir):
    produce(log)
    log.delete()
    assert not log_dir.exists()
    assert log_dir.parent.exists()


def test_batches_are_stored_exactly_as_framed(log, log_dir):
    buf = bytearray(encode_batch([(b"a", b"b")], timestamp_ms=DEFAULT_TS))
    original = bytes(buf)
    log.append(buf, validate_batches(buf), 3)
    stored = (log_dir / "00000000000000000000.log").read_bytes()
    assert stored[8:12] == original[8:12]
    assert stored[16:] == original[16:]
