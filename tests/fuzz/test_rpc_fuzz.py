"""Property-based fuzzing of every RPC of comet.v1.BrokerService against a real broker.

Random and extreme field values, invalid names, negative and huge numbers,
random and damaged record batches. Every answer must be OK or one of the
precise status codes a client can act on — never INTERNAL or UNKNOWN — the
broker must stay up, and the bytes stored in a reference topic must not
change.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comet.cli.local_broker import LocalBroker, wait_healthy
from comet.records import encode_batch
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["BrokerService"]
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.DATA_LOSS,
}
REFERENCE = "fuzz-reference"  # never named by fuzzed requests: its bytes must not change
TARGET = "fuzz-target"  # named by fuzzed requests: refused writes must not change it
WRITES = {"ProduceBatch", "Produce", "Replicate"}
CALL_TIMEOUT_S = 3.0
EXAMPLES_PER_RPC = 100

INT32_EXTREMES = [0, -1, 1, 2**31 - 1, -(2**31)]
INT64_EXTREMES = [0, -1, -2, 1, 2**63 - 1, -(2**63), 2**31]
GOOD_BATCH = encode_batch([(b"k", b"v" * 20), (None, b"x")])

names = st.one_of(
    st.sampled_from(
        [REFERENCE, "", ".", "..", "a/b", "../etc", "x" * 250, "ok-name", "é", "@meta"]
    ),
    st.text(max_size=30),
    st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
)


def batches() -> st.SearchStrategy[bytes]:
    """Random bytes, a good batch, and good batches damaged in one place."""

    def damage(data: tuple[int, int]) -> bytes:
        pos, value = data
        out = bytearray(GOOD_BATCH)
        out[pos % len(out)] = value
        return bytes(out)

    return st.one_of(
        st.binary(max_size=200),
        st.just(GOOD_BATCH),
        st.tuples(st.integers(0, 10_000), st.integers(0, 255)).map(damage),
        st.integers(0, len(GOOD_BATCH)).map(lambda n: GOOD_BATCH[:n]),
    )


def field_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values for one field, by type and, for a few, by name."""
    name = field.name
    if name in ("name", "topic", "group") or (
        name.endswith("_id") and field.type == field.TYPE_STRING
    ):
        base: st.SearchStrategy[Any] = names
    elif name == "topics" and field.type == field.TYPE_STRING:
        base = names
    elif name == "records" and field.type == field.TYPE_BYTES:
        base = batches()
    elif name in ("partitions", "replication_factor") and field.type == field.TYPE_INT32:
        base = st.one_of(st.integers(-3, 6), st.sampled_from([10_001, 2**31 - 1, -(2**31)]))
    elif "wait" in name or "timeout" in name or "session" in name:
        base = st.one_of(st.integers(-5, 300), st.sampled_from(INT32_EXTREMES))
    elif field.type == field.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            return st.dictionaries(st.text(max_size=25), st.text(max_size=25), max_size=3)
        base = message_strategy(field.message_type)
    elif field.type == field.TYPE_STRING:
        base = st.text(max_size=40)
    elif field.type == field.TYPE_BYTES:
        base = st.binary(max_size=64)
    elif field.type == field.TYPE_BOOL:
        base = st.booleans()
    elif field.type in (field.TYPE_INT32, field.TYPE_SINT32):
        base = st.one_of(st.integers(-3, 10), st.sampled_from(INT32_EXTREMES))
    elif field.type in (field.TYPE_INT64, field.TYPE_SINT64):
        base = st.one_of(st.integers(-3, 100), st.sampled_from(INT64_EXTREMES))
    else:
        raise AssertionError(f"no strategy for {field.full_name} (type {field.type})")
    if field.is_repeated:
        return st.lists(base, max_size=4)
    return base


def message_strategy(descriptor: Any) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of field values for `descriptor`, any field possibly left out."""
    return st.fixed_dictionaries(
        {}, optional={f.name: field_strategy(f) for f in descriptor.fields}
    )


def build(descriptor: Any, values: dict[str, Any]) -> Any:
    """The request message with `values` set (nested dicts become messages)."""
    cls = getattr(pb, descriptor.name)
    return cls(**_nested(descriptor, values))


def _nested(descriptor: Any, values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        field = descriptor.fields_by_name[key]
        if field.type == field.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            sub = getattr(pb, field.message_type.name)
            if field.is_repeated:
                value = [sub(**_nested(field.message_type, v)) for v in value]
            else:
                value = sub(**_nested(field.message_type, value))
        out[key] = value
    return out


@pytest.fixture(scope="module")
def fuzz_target(broker: LocalBroker):
    channel = grpc.insecure_channel(broker.address)
    stub = broker_pb2_grpc.BrokerServiceStub(channel)
    stub.CreateTopic(pb.CreateTopicRequest(name=REFERENCE, partitions=2), timeout=5)
    stub.CreateTopic(pb.CreateTopicRequest(name=TARGET, partitions=2), timeout=5)
    for p in (0, 1):
        stub.ProduceBatch(
            pb.ProduceBatchRequest(topic=REFERENCE, partition=p, records=GOOD_BATCH, acks=1),
            timeout=5,
        )
    before = _stored(stub)
    yield broker, stub
    channel.close()
    assert _stored_after_fuzzing(broker) == before


def _stored(stub: broker_pb2_grpc.BrokerServiceStub) -> list[bytes]:
    return [
        stub.Fetch(pb.FetchRequest(topic=REFERENCE, partition=p, offset=0), timeout=5).records
        for p in (0, 1)
    ]


def _log_ends(stub: broker_pb2_grpc.BrokerServiceStub) -> list[int]:
    return [
        stub.ListOffsets(
            pb.ListOffsetsRequest(topic=TARGET, partition=p, timestamp_ms=-1), timeout=5
        ).offset
        for p in (0, 1)
    ]


def _stored_after_fuzzing(broker: LocalBroker) -> list[bytes]:
    with grpc.insecure_channel(broker.address) as channel:
        return _stored(broker_pb2_grpc.BrokerServiceStub(channel))


COUNTS: dict[str, int] = {}


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_every_rpc_answers_precisely_and_stays_up(fuzz_target, method: str) -> None:
    broker, stub = fuzz_target
    descriptor = SERVICE.methods_by_name[method].input_type
    call = getattr(stub, method)

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=True,
    )
    @given(values=message_strategy(descriptor))
    def check(values: dict[str, Any]) -> None:
        # hypothesis also tries string constants of this module: keep the reference intact
        values = {k: (TARGET if v == REFERENCE else v) for k, v in values.items()}
        request = build(descriptor, values)
        if method == "DeleteTopic" and request.name == TARGET:
            request.name = "not-the-target"
        ends = _log_ends(stub) if method in WRITES else None
        try:
            call(request, timeout=CALL_TIMEOUT_S)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert code in ALLOWED, f"{method}({values!r}) -> {code}: {exc.details()}"
            if code != grpc.StatusCode.DEADLINE_EXCEEDED:
                assert exc.details(), f"{method} answered {code} without a message"
            if ends is not None and code != grpc.StatusCode.DEADLINE_EXCEEDED:
                assert _log_ends(stub) == ends, f"refused {method}({values!r}) wrote something"
        COUNTS[method] = COUNTS.get(method, 0) + 1

    check()
    wait_healthy(broker.address, 5.0, broker.proc)
    # hypothesis stops early when a message has no fields to vary
    assert COUNTS[method] >= (EXAMPLES_PER_RPC // 2 if descriptor.fields else 1)
