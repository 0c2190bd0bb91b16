"""BrokerService registration: a handler for every RPC; malformed requests are caught."""

from __future__ import annotations

from comet.server.wire import PRE_ENCODED, MalformedRequest, method_handlers
from comet.v1 import broker_pb2 as pb


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


def test_a_request_that_is_not_protobuf_becomes_a_malformed_request() -> None:
    handlers = method_handlers(_Servicer())
    produce = handlers["ProduceBatch"].request_deserializer(b"\x0a\xff\xff")
    assert isinstance(produce, MalformedRequest)
    assert produce.message_type == "comet.v1.ProduceBatchRequest"
    fetch = handlers["Fetch"].request_deserializer(b"\x0a\x02\xff\xfe")
    assert isinstance(fetch, MalformedRequest) and "UTF-8" in fetch.error
