"""The record-carrying messages of comet.v1, framed and read by hand around the record bytes.

ProduceBatchRequest, FetchResponse and ReplicaFetchResponse are almost all
record bytes. Building the generated message and serializing it copies
those bytes twice (into the message, then into the output), and parsing
one copies them twice (into the message, then out of the field). The
encoders here write the few other fields and join them with the records
(one copy); the decoders read the wire format and hand the records on as
a view of the received bytes (no copy). Both produce and accept exactly
what protobuf does: fields in number order with proto3 defaults left out
when writing; last value wins, unknown fields skipped and groups left to
the generated parser when reading. Property tests compare the two.

The broker uses them for produce requests and fetch answers, the client
for fetch answers and produce requests.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from google.protobuf.message import DecodeError

from comet.v1 import broker_pb2 as pb

_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5

Bytes = bytes | bytearray | memoryview


# --- writing -------------------------------------------------------------------------


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


def _string(number: int, text: str) -> bytes:
    data = text.encode()
    return _len_prefix(number, len(data)) + data


def encode_produce_batch_request(
    topic: str, partition: int, records: Bytes, acks: int, timeout_ms: int
) -> bytes:
    """A serialized comet.v1.ProduceBatchRequest, copying `records` once."""
    head = _string(1, topic) + _int(2, partition) + _len_prefix(3, len(records))
    return b"".join((head, records, _int(4, acks) + _int(5, timeout_ms)))


def encode_fetch_response(
    topic: str,
    partition: int,
    records: Bytes,
    high_watermark: int,
    log_start_offset: int,
    log_end_offset: int,
) -> bytes:
    """A serialized comet.v1.FetchResponse, copying `records` once."""
    head = _string(1, topic) + _int(2, partition) + _len_prefix(3, len(records))
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


def serialize(message: object) -> bytes:
    """A gRPC serializer for calls that may carry pre-encoded bytes or a generated message."""
    return message if isinstance(message, bytes) else message.SerializeToString()  # type: ignore[attr-defined]


# --- reading -------------------------------------------------------------------------


class _Groups(Exception):
    """The message uses groups: the generated parser reads it instead."""


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


def _fields(data: bytes) -> tuple[dict[int, int], dict[int, memoryview]]:
    """The last varint and length-delimited value of each field number in `data`."""
    view = memoryview(data)
    ints: dict[int, int] = {}
    blobs: dict[int, memoryview] = {}
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire == _VARINT:
            ints[number], pos = _read_varint(data, pos)
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > end:
                raise DecodeError("length-delimited field runs past the end")
            blobs[number] = view[pos : pos + size]
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise DecodeError("fixed-size field runs past the end")
        else:
            raise _Groups
    return ints, blobs


def _parse(data: bytes, message_type: Any) -> tuple[dict[int, int], dict[int, memoryview]]:
    """The fields of `data`; a message with groups is read by the generated parser first."""
    try:
        return _fields(data)
    except _Groups:
        message = message_type.FromString(data)
        message.DiscardUnknownFields()  # the groups: no field of these messages is one
        return _fields(message.SerializeToString())


def _int32(ints: dict[int, int], number: int) -> int:
    """Field `number` as protobuf reads an int32: the low 32 bits, signed."""
    value = ints.get(number, 0) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _int64(ints: dict[int, int], number: int) -> int:
    """Field `number` as protobuf reads an int64: the low 64 bits, signed."""
    value = ints.get(number, 0) & 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(blobs: dict[int, memoryview], number: int, name: str) -> str:
    """Field `number` as a proto3 string; DecodeError when it is not UTF-8."""
    data = blobs.get(number)
    if data is None:
        return ""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{name}: string field had bad UTF-8") from None


_EMPTY = memoryview(b"")


class ProduceBatchView(NamedTuple):
    """A ProduceBatchRequest whose records are a view of the received bytes."""

    topic: str
    partition: int
    records: memoryview
    acks: int
    timeout_ms: int


def decode_produce_batch(data: bytes) -> ProduceBatchView:
    """Parse a ProduceBatchRequest as protobuf would, without copying the records."""
    ints, blobs = _parse(data, pb.ProduceBatchRequest)
    return ProduceBatchView(
        _text(blobs, 1, "topic"),
        _int32(ints, 2),
        blobs.get(3, _EMPTY),
        _int32(ints, 4),
        _int32(ints, 5),
    )


class FetchView(NamedTuple):
    """A FetchResponse whose records are a view of the received bytes."""

    topic: str
    partition: int
    records: memoryview
    high_watermark: int
    log_start_offset: int
    log_end_offset: int


def decode_fetch_response(data: bytes) -> FetchView:
    """Parse a FetchResponse as protobuf would, without copying the records."""
    ints, blobs = _parse(data, pb.FetchResponse)
    return FetchView(
        _text(blobs, 1, "topic"),
        _int32(ints, 2),
        blobs.get(3, _EMPTY),
        _int64(ints, 4),
        _int64(ints, 5),
        _int64(ints, 6),
    )
