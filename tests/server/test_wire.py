"""Pre-encoded fetch responses are byte-for-byte what protobuf writes, and every RPC is served."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from comet.server.wire import (
    PRE_ENCODED,
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
