"""Bytes that are not a valid request message: INVALID_ARGUMENT for every RPC, nothing changes."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError

from comet.cli.local_broker import LocalBroker
from comet.client import CometClient
from comet.records import encode_batch
from comet.v1 import broker_pb2 as pb

METHODS = {
    m.name: getattr(pb, m.input_type.name)
    for m in pb.DESCRIPTOR.services_by_name["BrokerService"].methods
}
GARBAGE = [
    b"\x0a\xff\xff",  # a length running past the end
    b"\x0a\x02\xff\xfe",  # a string field that is not UTF-8
    b"\x00\x01",  # field number 0
    b"\x0b\x0b",  # a group that never ends
]


def parses(message_type: type, data: bytes) -> bool:
    """True if protobuf reads `data` as a `message_type` (unknown fields are allowed)."""
    try:
        message_type.FromString(data)
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_every_rpc_refuses_bytes_that_are_not_its_message(
    broker: LocalBroker, topic: str, method: str
) -> None:
    with CometClient(broker.address) as client:
        client.create_topic(topic, 1, exist_ok=True)
        client.produce_batch(topic, 0, encode_batch([(None, b"kept")]), acks=1)
        end = client.list_offsets(topic, 0)
    async with grpc.aio.insecure_channel(broker.address) as channel:
        call = channel.unary_unary(
            f"/comet.v1.BrokerService/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        invalid = [p for p in GARBAGE if not parses(METHODS[method], p)]
        assert invalid  # a length past the end is invalid for every message type
        for payload in invalid:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(payload, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, payload)
            assert "request: not a valid comet.v1." in (err.value.details() or "")
    with CometClient(broker.address) as client:
        assert client.list_offsets(topic, 0) == end
