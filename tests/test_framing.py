"""comet.framing: the hand-framed data messages read and write exactly what protobuf does."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from comet.framing import (
    decode_fetch_response,
    decode_produce_batch,
    encode_fetch_response,
    encode_produce_batch_request,
    encode_replica_fetch_response,
)
from comet.v1 import broker_pb2 as pb

int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)


@given(
    topic=st.text(max_size=300),
    partition=int32,
    records=st.binary(max_size=5000),
    hw=int64,
    start=int64,
    end=int64,
)
def test_fetch_response_matches_protobuf(
    topic: str, partition: int, records: bytes, hw: int, start: int, end: int
) -> None:
    expected = pb.FetchResponse(
        topic=topic,
        partition=partition,
        records=records,
        high_watermark=hw,
        log_start_offset=start,
        log_end_offset=end,
    ).SerializeToString()
    assert encode_fetch_response(topic, partition, records, hw, start, end) == expected


@given(records=st.binary(max_size=5000), hw=int64, start=int64, end=int64, epoch=int32)
def test_replica_fetch_response_matches_protobuf(
    records: bytes, hw: int, start: int, end: int, epoch: int
) -> None:
    expected = pb.ReplicaFetchResponse(
        records=records,
        high_watermark=hw,
        log_start_offset=start,
        log_end_offset=end,
        leader_epoch=epoch,
    ).SerializeToString()
    assert encode_replica_fetch_response(records, hw, start, end, epoch) == expected


def test_a_view_of_stored_bytes_is_framed_without_a_slice() -> None:
    stored = bytes(range(256)) * 10
    view = memoryview(stored)[:1000]
    encoded = encode_fetch_response("t", 1, view, 5, 0, 9)
    assert pb.FetchResponse.FromString(encoded).records == stored[:1000]


def _via_protobuf(data: bytes) -> tuple | None:
    """What the generated parser makes of `data`, or None when it refuses it."""
    try:
        m = pb.ProduceBatchRequest.FromString(data)
    except DecodeError:
        return None
    return (m.topic, m.partition, m.records, m.acks, m.timeout_ms)


def _via_fast_path(data: bytes) -> tuple | None:
    try:
        v = decode_produce_batch(data)
    except DecodeError:
        return None
    return (v.topic, v.partition, bytes(v.records), v.acks, v.timeout_ms)


produce_requests = st.builds(
    lambda topic, partition, records, acks, timeout: pb.ProduceBatchRequest(
        topic=topic, partition=partition, records=records, acks=acks, timeout_ms=timeout
    ).SerializeToString(),
    st.text(max_size=50),
    int32,
    st.binary(max_size=300),
    int32,
    int32,
)


@given(produce_requests)
def test_produce_batch_parses_as_protobuf_does(data: bytes) -> None:
    assert _via_fast_path(data) == _via_protobuf(data)
    assert isinstance(decode_produce_batch(data).records, memoryview)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(produce_requests, st.binary(max_size=40)).map(lambda t: t[0] + t[1]),
        st.tuples(produce_requests, st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
        st.tuples(produce_requests, st.integers(0, 400), st.integers(0, 255)).map(
            lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
        ),
    )
)
def test_any_bytes_parse_as_protobuf_does_or_are_refused_by_both(data: bytes) -> None:
    assert _via_fast_path(data) == _via_protobuf(data)


def test_repeated_fields_keep_the_last_and_unknown_ones_are_skipped() -> None:
    first = pb.ProduceBatchRequest(topic="a", partition=1, records=b"x").SerializeToString()
    second = pb.ProduceBatchRequest(topic="b", acks=-1).SerializeToString()
    # field 10 as a varint, field 20 as a fixed64, field 2 (partition) as a string
    unknown = bytes([10 << 3, 7]) + bytes([0xA1, 0x01]) + b"8 bytes!" + b"\x12\x01z"
    view = decode_produce_batch(first + unknown + second)
    assert (view.topic, view.partition, bytes(view.records), view.acks) == ("b", 1, b"x", -1)


@given(
    topic=st.text(max_size=50),
    partition=int32,
    records=st.binary(max_size=3000),
    acks=int32,
    timeout=int32,
)
def test_produce_batch_request_matches_protobuf(
    topic: str, partition: int, records: bytes, acks: int, timeout: int
) -> None:
    expected = pb.ProduceBatchRequest(
        topic=topic, partition=partition, records=records, acks=acks, timeout_ms=timeout
    ).SerializeToString()
    assert encode_produce_batch_request(topic, partition, records, acks, timeout) == expected


fetch_responses = st.builds(
    lambda topic, partition, records, hw, start, end: pb.FetchResponse(
        topic=topic,
        partition=partition,
        records=records,
        high_watermark=hw,
        log_start_offset=start,
        log_end_offset=end,
    ).SerializeToString(),
    st.text(max_size=50),
    int32,
    st.binary(max_size=300),
    int64,
    int64,
    int64,
)


def _fetch_via_protobuf(data: bytes) -> tuple | None:
    try:
        m = pb.FetchResponse.FromString(data)
    except DecodeError:
        return None
    return (m.topic, m.partition, m.records, m.high_watermark, m.log_start_offset, m.log_end_offset)


def _fetch_via_fast_path(data: bytes) -> tuple | None:
    try:
        v = decode_fetch_response(data)
    except DecodeError:
        return None
    return (v.topic, v.partition, bytes(v.records), *v[3:])


@given(
    st.one_of(
        fetch_responses,
        st.binary(max_size=200),
        st.tuples(fetch_responses, fetch_responses).map(lambda t: t[0] + t[1]),
        st.tuples(fetch_responses, st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
        st.tuples(fetch_responses, st.integers(0, 400), st.integers(0, 255)).map(
            lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
        ),
    )
)
def test_fetch_response_parses_as_protobuf_does(data: bytes) -> None:
    assert _fetch_via_fast_path(data) == _fetch_via_protobuf(data)


def test_groups_are_left_to_the_generated_parser() -> None:
    # field 9 as a group (start 0x4B, end 0x4C) holding a varint field, then the records
    data = b"\x4b\x08\x01\x4c" + pb.FetchResponse(records=b"abc", partition=4).SerializeToString()
    view = decode_fetch_response(data)
    assert (bytes(view.records), view.partition) == (b"abc", 4)
    produce = b"\x4b\x4c" + pb.ProduceBatchRequest(topic="t", records=b"x").SerializeToString()
    assert (decode_produce_batch(produce).topic, bytes(decode_produce_batch(produce).records)) == (
        "t",
        b"x",
    )
