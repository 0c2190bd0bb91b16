"""Helpers shared by the storage tests: building batches and reading whole logs."""

from __future__ import annotations

from comet.records import BatchHeader, Record, decode_batches, encode_batch, validate_batches
from comet.storage import AppendInfo, PartitionLog

DEFAULT_TS = 1_700_000_000_000


def make_batch(
    records: int = 1, value_size: int = 10, *, timestamp_ms: int = DEFAULT_TS, tag: int = 0
) -> bytearray:
    """One producer-framed batch of `records` records with recognisable keys and values."""
    pairs = [
        (f"k{tag}-{i}".encode(), (f"v{tag}-{i}-".encode() * value_size)[:value_size])
        for i in range(records)
    ]
    return bytearray(encode_batch(pairs, timestamp_ms=timestamp_ms))


def framed(buf: bytearray) -> tuple[bytearray, list[BatchHeader]]:
    """The buffer with its validated headers, as the broker hands them to append."""
    return buf, validate_batches(buf)


def produce(
    log: PartitionLog,
    records: int = 1,
    value_size: int = 10,
    *,
    timestamp_ms: int = DEFAULT_TS,
    tag: int = 0,
    leader_epoch: int = 0,
) -> AppendInfo:
    """Append one freshly built batch."""
    buf = make_batch(records, value_size, timestamp_ms=timestamp_ms, tag=tag)
    return log.append(buf, validate_batches(buf), leader_epoch)


def read_all(log: PartitionLog, start: int | None = None, max_bytes: int = 1 << 20) -> list[Record]:
    """Every record from `start` (default: log start) to the log end, read in chunks."""
    offset = log.log_start_offset if start is None else start
    records: list[Record] = []
    while offset < log.log_end_offset:
        result = log.read(offset, max_bytes)
        assert result.records, f"empty read at {offset} below log end {log.log_end_offset}"
        records.extend(decode_batches(result.records, offset))
        offset = result.next_offset
    return records


def batch_headers(data: bytes) -> list[BatchHeader]:
    """Headers of the stored batches in `data` (CRC-checked, broker rules)."""
    return validate_batches(data, producer=False) if data else []
