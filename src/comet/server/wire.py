"""Registering BrokerService from the schema, with the hand-framed data messages.

Fetch and ReplicaFetch may answer bytes already framed by comet.framing
(around the records read from the log), and ProduceBatch requests are read
by comet.framing so their records stay a view of the received bytes; the
other RPCs use the generated messages. A request that is not valid
protobuf becomes a MalformedRequest, which the servicer answers
INVALID_ARGUMENT (gRPC alone would answer UNKNOWN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import DecodeError

from comet.framing import decode_produce_batch, serialize
from comet.v1 import broker_pb2 as pb

SERVICE = "comet.v1.BrokerService"


class MalformedRequest(NamedTuple):
    """What a request that could not be parsed becomes: the servicer refuses it."""

    message_type: str
    error: str


def _tolerant(parse: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    """A request deserializer that turns a parse failure into a MalformedRequest."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return MalformedRequest(message_type, str(exc))

    return deserialize


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """A handler for every method of BrokerService, built from the schema's descriptor."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["BrokerService"].methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        serializer = serialize if method.name in PRE_ENCODED else response.SerializeToString
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        parse = FAST_REQUEST_PARSERS.get(method.name, request.FromString)
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(parse, method.input_type.full_name),
            response_serializer=serializer,
        )
    return handlers


# RPCs whose servicer methods may answer with pre-encoded bytes.
PRE_ENCODED = frozenset({"Fetch", "ReplicaFetch"})
# RPCs whose requests are parsed without the generated message.
FAST_REQUEST_PARSERS: dict[str, Callable[[bytes], Any]] = {"ProduceBatch": decode_produce_batch}


def add_broker_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Serve `servicer` as comet.v1.BrokerService on `server`."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
