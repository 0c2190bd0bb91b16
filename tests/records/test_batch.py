"""RecordBatch v2 header validation, stamping and the builder/reader round trip."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from comet.records import (
    BATCH_HEADER_SIZE,
    Compression,
    InvalidBatchError,
    RecordBatchBuilder,
    decode_batches,
    encode_batch,
    iter_batches,
    parse_header,
    stamp_batch,
    validate_batches,
)


def test_header_fields_of_an_encoded_batch() -> None:
    batch = encode_batch([(b"k1", b"v1"), (None, b"v2")], timestamp_ms=1_700_000_000_000)
    header = parse_header(batch)
    assert header.magic == 2
    assert header.record_count == 2
    assert header.last_offset_delta == 1
    assert header.first_timestamp == header.max_timestamp == 1_700_000_000_000
    assert header.size == len(batch)
    assert validate_batches(batch) == [header]


def test_stamping_keeps_the_crc_valid() -> None:
    buf = bytearray(encode_batch([(b"k", b"v")] * 3))
    stamp_batch(buf, 0, 1234, 7)
    [header] = validate_batches(bytes(buf))
    assert (header.base_offset, header.partition_leader_epoch) == (1234, 7)
    assert [r.offset for r in decode_batches(buf)] == [1234, 1235, 1236]


def test_concatenated_batches_are_all_validated() -> None:
    a = encode_batch([(b"a", b"1")])
    b = encode_batch([(b"b", b"2"), (b"c", b"3")])
    headers = validate_batches(a + b)
    assert [h.record_count for h in headers] == [1, 2]
    assert [pos for pos, _ in iter_batches(a + b)] == [0, len(a)]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b[:16] + b"\x01" + b[17:], "magic 1"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "CRC-32C mismatch"),
        (lambda b: b"", "no record batch"),
        (lambda b: b + b"\x00" * 5, "truncated"),
    ],
)
def test_malformed_batches_are_refused(mutate, message: str) -> None:
    batch = encode_batch([(b"key", b"value" * 10)])
    with pytest.raises(InvalidBatchError, match=message):
        validate_batches(mutate(batch))


def _rewrite(batch: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(batch)
    struct.pack_into(fmt, buf, offset, value)
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


def test_producer_rules_on_counts_and_attributes() -> None:
    batch = encode_batch([(b"k", b"v")] * 2)
    with pytest.raises(InvalidBatchError, match="last_offset_delta"):
        validate_batches(_rewrite(batch, 23, ">i", 5))
    with pytest.raises(InvalidBatchError, match="record_count"):
        validate_batches(_rewrite(batch, 57, ">i", 0))
    with pytest.raises(InvalidBatchError, match="control and transactional"):
        validate_batches(_rewrite(batch, 21, ">h", 0x20))
    with pytest.raises(InvalidBatchError, match="compression codec 7"):
        validate_batches(_rewrite(batch, 21, ">h", 7))


def test_builder_reports_full_and_always_takes_the_first_record() -> None:
    builder = RecordBatchBuilder(max_bytes=200)
    assert builder.append(b"k", b"x" * 500)
    assert not builder.append(b"k", b"x" * 10)
    assert len(builder) == 1
    assert parse_header(builder.build()).record_count == 1


@pytest.mark.parametrize(
    "codec", [Compression.NONE, Compression.GZIP, Compression.ZSTD, Compression.LZ4]
)
def test_compressed_round_trip(codec: Compression) -> None:
    builder = RecordBatchBuilder(codec)
    for i in range(100):
        builder.append(f"k{i}".encode(), b"value" * 20, 1_000 + i, [("h", b"x")])
    batch = builder.build()
    [header] = validate_batches(batch)
    assert header.compression == codec
    records = list(decode_batches(batch))
    assert [r.key for r in records] == [f"k{i}".encode() for i in range(100)]
    assert records[5].headers == [("h", b"x")]
    assert records[5].timestamp_ms == 1_005


def test_compression_parse_names_the_choices() -> None:
    assert Compression.parse("zstd") is Compression.ZSTD
    assert Compression.parse(None) is Compression.NONE
    with pytest.raises(ValueError, match="compression must be one of"):
        Compression.parse("brotli")


def test_decode_skips_records_below_start_and_a_partial_tail() -> None:
    buf = bytearray(encode_batch([(None, b"%d" % i) for i in range(10)]))
    stamp_batch(buf, 0, 100, 0)
    tail = encode_batch([(None, b"x")])[:40]
    records = list(decode_batches(bytes(buf) + tail, 105))
    assert [r.offset for r in records] == [105, 106, 107, 108, 109]


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.binary(max_size=20)), st.binary(max_size=200)),
        min_size=1,
        max_size=50,
    )
)
def test_any_records_round_trip(records: list[tuple[bytes | None, bytes]]) -> None:
    batch = encode_batch(records)
    assert len(batch) >= BATCH_HEADER_SIZE
    validate_batches(batch)
    assert [(r.key, r.value) for r in decode_batches(batch)] == records


@given(st.binary(max_size=300))
def test_random_bytes_never_pass_as_a_batch_unless_they_are_one(data: bytes) -> None:
    try:
        headers = validate_batches(data)
    except InvalidBatchError:
        return
    assert sum(h.size for h in headers) == len(data)
