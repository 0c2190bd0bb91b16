"""Registering BrokerService: record bytes copied as little as protobuf allows.

A fetch answer is almost all record bytes. Building a FetchResponse
message and serializing it copies those bytes twice (into the message,
then into the output); framing the few other fields by hand and joining
them with the bytes read from the log copies them once. The encoders
below write exactly what protobuf's SerializeToString writes for the
same values (fields in number order, proto3 defaults left out), which a
test checks.

A produce request is the same the other way: parsing a ProduceBatchRequest
copies the records into the message and reading the field copies them
again. `decode_produce_batch` reads the wire format itself and hands the
records on as a view of the received bytes.

A request that is not valid protobuf becomes a MalformedRequest, which the
servicer answers INVALID_ARGUMENT (gRPC would answer UNKNOWN). The other
RPCs use the generated messages as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import DecodeError

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


class MalformedRequest(NamedTuple):
    """What a request that could not be parsed becomes: the servicer refuses it."""

    message_type: str
    error: str


class ProduceBatchView(NamedTuple):
    """A ProduceBatchRequest whose records are a view of the received bytes."""

    topic: str
    partition: int
    records: memoryview
    acks: int
    timeout_ms: int


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at `pos`; DecodeError if cut or too long."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _int32(value: int) -> int:
    """The int32 a varint field carries (protobuf keeps the low 32 bits, signed)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def decode_produce_batch(data: bytes) -> ProduceBatchView:
    """Parse a ProduceBatchRequest as protobuf would, without copying the records.

    Scalars keep the last value seen, unknown fields (or known ones with
    another wire type) are skipped, groups are left to the generated
    parser; DecodeError for a cut or malformed message or a topic that is
    not UTF-8.
    """
    view = memoryview(data)
    topic = b""
    records = view[0:0]
    ints = {2: 0, 4: 0, 5: 0}
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            if number in ints:
                ints[number] = _int32(value)
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > end:
                raise DecodeError("length-delimited field runs past the end")
            if number == 1:
                topic = data[pos : pos + size]
            elif number == 3:
                records = view[pos : pos + size]
            pos += size
        elif wire in (1, 5):  # fixed64, fixed32: unknown here
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise DecodeError("fixed-size field runs past the end")
        else:  # groups: rare enough to leave to protobuf
            return _produce_batch_via_protobuf(data)
    try:
        name = topic.decode()
    except UnicodeDecodeError:
        raise DecodeError("topic: string field had bad UTF-8") from None
    return ProduceBatchView(name, ints[2], records, ints[4], ints[5])


def _produce_batch_via_protobuf(data: bytes) -> ProduceBatchView:
    """The generated parser's reading of a request, as a ProduceBatchView."""
    m = pb.ProduceBatchRequest.FromString(data)
    return ProduceBatchView(m.topic, m.partition, memoryview(m.records), m.acks, m.timeout_ms)


def _tolerant(parse: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    """A request deserializer that turns a parse failure into a MalformedRequest."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return MalformedRequest(message_type, str(exc))

    return deserialize


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
