"""PartitionLog.iter_batch_headers: a header scan over every segment, no record decoding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comet.records import RecordBatchBuilder, validate_batches
from comet.storage import LogClosedError, LogConfig, PartitionLog
from comet.storage.segment_read import HEADER_SCAN_CHUNK

from .support import DEFAULT_TS, batch_headers

SMALL = LogConfig(segment_bytes=4096, index_interval_bytes=256)


def idempotent_batch(records: int, value_size: int, pid: int, seq: int) -> bytearray:
    """A batch stamped with producer id `pid`, epoch 1 and base sequence `seq`."""
    builder = RecordBatchBuilder(
        max_bytes=1 << 30, producer_id=pid, producer_epoch=1, base_sequence=seq
    )
    for i in range(records):
        builder.append(b"k%d" % i, b"v" * value_size, DEFAULT_TS)
    return bytearray(builder.build())


def fill(log: PartitionLog, batches: int, value_size: int = 20) -> None:
    """Append `batches` batches of 1-3 records from producers 7 and 8, sequences counting up."""
    seqs = {7: 0, 8: 0}
    for i in range(batches):
        pid = 7 + i % 2
        records = 1 + i % 3
        buf = idempotent_batch(records, value_size, pid, seqs[pid])
        seqs[pid] += records
        log.append(buf, validate_batches(buf), leader_epoch=2)


@pytest.fixture
def log(tmp_path: Path):
    plog = PartitionLog.open(tmp_path / "t" / "0", SMALL, now_ms=lambda: DEFAULT_TS)
    yield plog
    plog.close()


def stored_headers(log: PartitionLog) -> list:
    """Headers of every stored batch, from a full CRC-checked read."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        result = log.read(offset, 1 << 20)
        out.extend(batch_headers(result.records))
        offset = result.next_offset
    return out


def test_headers_of_every_segment_match_what_reads_return(log):
    fill(log, 120)
    assert log.segment_count > 3
    headers = list(log.iter_batch_headers())
    assert headers == stored_headers(log)
    assert headers[0].base_offset == 0
    assert headers[-1].next_offset == log.log_end_offset
    assert {h.producer_id for h in headers} == {7, 8}
    assert all(h.partition_leader_epoch == 2 and h.producer_epoch == 1 for h in headers)
    assert [h.base_sequence for h in headers if h.producer_id == 7][:3] == [0, 1, 4]


def test_start_offset_begins_at_the_batch_holding_it(log):
    fill(log, 120)
    everything = list(log.iter_batch_headers())
    for target in (0, 1, 57, 58, log.log_end_offset - 1):
        got = list(log.iter_batch_headers(start_offset=target))
        assert got[0].base_offset <= target < got[0].next_offset
        assert got == [h for h in everything if h.next_offset > target]
    assert list(log.iter_batch_headers(start_offset=log.log_end_offset)) == []


def test_batches_larger_than_a_scan_chunk_and_small_ones_mixed(tmp_path: Path):
    config = LogConfig(segment_bytes=1 << 20, index_interval_bytes=4096)
    plog = PartitionLog.open(tmp_path / "big", config, now_ms=lambda: DEFAULT_TS)
    try:
        for i in range(30):
            value_size = HEADER_SCAN_CHUNK * 2 if i % 3 == 0 else 10
            buf = idempotent_batch(2, value_size, 9, 2 * i)
            plog.append(buf, validate_batches(buf), leader_epoch=0)
        headers = list(plog.iter_batch_headers())
        assert headers == stored_headers(plog)
        assert [h.base_sequence for h in headers] == [2 * i for i in range(30)]
    finally:
        plog.close()


def test_reopen_truncation_and_retention_are_reflected(log, tmp_path: Path):
    fill(log, 120)
    log.truncate_to(100)
    assert [h.next_offset for h in log.iter_batch_headers()][-1] == log.log_end_offset
    log.update_config(LogConfig(segment_bytes=4096, index_interval_bytes=256, retention_bytes=0))
    assert log.apply_retention() > 0
    headers = list(log.iter_batch_headers())
    assert headers[0].base_offset == log.log_start_offset
    assert headers == stored_headers(log)
    log.close()
    reopened = PartitionLog.open(log.directory, SMALL, now_ms=lambda: DEFAULT_TS)
    try:
        assert list(reopened.iter_batch_headers()) == headers
    finally:
        reopened.close()


def test_appends_after_the_scan_started_are_not_included(log):
    fill(log, 10)
    end = log.log_end_offset
    scan = log.iter_batch_headers()
    first = next(scan)
    fill(log, 5)
    rest = list(scan)
    assert first.base_offset == 0
    assert rest[-1].next_offset == end


def test_a_badly_framed_batch_ends_its_segment_only(log):
    fill(log, 120)
    sealed = log._segments[1]
    headers = list(log.iter_batch_headers())
    in_sealed = [h for h in headers if sealed.base_offset <= h.base_offset < sealed.next_offset]
    victim = in_sealed[3]
    position = sum(h.size for h in in_sealed[:3])
    with open(sealed.path, "r+b") as f:  # magic byte of the fourth batch
        os.pwrite(f.fileno(), b"\x07", position + 16)
    got = list(log.iter_batch_headers())
    assert victim not in got
    assert in_sealed[2] in got and in_sealed[4] not in got
    skipped = range(victim.base_offset, sealed.next_offset)
    assert got == [h for h in headers if h.base_offset not in skipped]


def test_a_closed_log_refuses_the_scan(log):
    fill(log, 3)
    log.close()
    with pytest.raises(LogClosedError):
        list(log.iter_batch_headers())
