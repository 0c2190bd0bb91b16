"""Pre-encoded fetch responses are byte-for-byte what protobuf writes, and every RPC is served."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from comet.server.wire import (
    PRE_ENCODED,
    MalformedRequest,
    decode_produce_batch,
    encode_fetch_response,
    encode_replica_fetch_response,
    method_handlers,
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


class _Servicer:
    """Answers any attribute with a callable, as a servicer has for each RPC."""

    def __getattr__(self, name: str) -> object:
        return lambda request, context: None


def test_every_rpc_of_the_schema_gets_a_handler() -> None:
    handlers = method_handlers(_Servicer())
    service = pb.DESCRIPTOR.services_by_name["BrokerService"]
    assert set(handlers) == {m.name for m in service.methods}
    assert set(handlers) >= PRE_ENCODED
    for method in service.methods:
        handler = handlers[method.name]
        assert handler.request_streaming == method.client_streaming
        assert handler.response_streaming == method.server_streaming
        pre = b"already encoded"
        if method.name in PRE_ENCODED:
            assert handler.response_serializer(pre) == pre
        response = getattr(pb, method.output_type.name)()
        assert handler.response_serializer(response) == response.SerializeToString()


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


def test_a_request_that_is_not_protobuf_becomes_a_malformed_request() -> None:
    handlers = method_handlers(_Servicer())
    produce = handlers["ProduceBatch"].request_deserializer(b"\x0a\xff\xff")
    assert isinstance(produce, MalformedRequest)
    assert produce.message_type == "comet.v1.ProduceBatchRequest"
    fetch = handlers["Fetch"].request_deserializer(b"\x0a\x02\xff\xfe")
    assert isinstance(fetch, MalformedRequest) and "UTF-8" in fetch.error
