"""Registering BrokerService, with fetch responses framed around the stored bytes.

A fetch answer is almost all record bytes. Building a FetchResponse
message and serializing it copies those bytes twice (into the message,
then into the output); framing the few other fields by hand and joining
them with the bytes read from the log copies them once. The encoders
below write exactly what protobuf's SerializeToString writes for the
same values (fields in number order, proto3 defaults left out), which a
test checks; the other RPCs use the generated messages as they are.
"""

from __future__ import annotations

from typing import Any

import grpc

from comet.v1 import broker_pb2 as pb

SERVICE = "comet.v1.BrokerService"
_VARINT = 0
_LEN = 2

Bytes = bytes | bytearray | memoryview


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int32/int64 values as their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value) if value else b""


def _len_prefix(number: int, size: int) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(size) if size else b""


def encode_fetch_response(
    topic: str,
    partition: int,
    records: Bytes,
    high_watermark: int,
    log_start_offset: int,
    log_end_offset: int,
) -> bytes:
    """A serialized comet.v1.FetchResponse, copying `records` once."""
    name = topic.encode()
    head = _len_prefix(1, len(name)) + name + _int(2, partition) + _len_prefix(3, len(records))
    tail = _int(4, high_watermark) + _int(5, log_start_offset) + _int(6, log_end_offset)
    return b"".join((head, records, tail))


def encode_replica_fetch_response(
    records: Bytes,
    high_watermark: int,
    log_start_offset: int,
    log_end_offset: int,
    leader_epoch: int,
) -> bytes:
    """A serialized comet.v1.ReplicaFetchResponse, copying `records` once."""
    tail = (
        _int(2, high_watermark)
        + _int(3, log_start_offset)
        + _int(4, log_end_offset)
        + _int(5, leader_epoch)
    )
    return b"".join((_len_prefix(1, len(records)), records, tail))


def _serialize(message: Any) -> bytes:
    """Pre-encoded answers as they are; generated messages serialized."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """A handler for every method of BrokerService, built from the schema's descriptor."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["BrokerService"].methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        serializer = _serialize if method.name in PRE_ENCODED else response.SerializeToString
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=serializer,
        )
    return handlers


# RPCs whose servicer methods may answer with pre-encoded bytes.
PRE_ENCODED = frozenset({"Fetch", "ReplicaFetch"})


def add_broker_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Serve `servicer` as comet.v1.BrokerService on `server`."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
