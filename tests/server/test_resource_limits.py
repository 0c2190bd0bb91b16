"""Resource limits of a real broker process: request size, streams per connection,
connections, and requests in flight for the whole broker.

Each limit is hit on purpose; the caller must get the precise status (and,
where the broker writes it, a message naming the flag), nothing may be
written, and the broker must keep serving afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comet.cli.local_broker import LocalBroker, free_port
from comet.errors import BrokerUnavailableError, from_rpc_error
from comet.records import encode_batch
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc
from tests.polling import wait_for

LIMIT_BYTES = 64 * 1024
INFLIGHT = 8
STREAMS = 4
CONNECTIONS = 2
TOPIC = "limits"
LONG_POLL_MS = 20_000
DEADLINE_S = 10.0
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # never share a TCP connection

BROKER_ARGS = [
    "--max-request-bytes",
    str(LIMIT_BYTES),
    "--max-concurrent-streams",
    str(STREAMS),
    "--max-connections",
    str(CONNECTIONS + 1),  # + the test's own control connection
]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One broker with every limit set low; --max-inflight-requests through its env var."""
    root = tmp_path_factory.mktemp("limits")
    os.environ["COMET_MAX_INFLIGHT_REQUESTS"] = str(INFLIGHT)
    try:
        broker = LocalBroker(root / "data", extra_args=BROKER_ARGS, log_path=root / "broker.log")
        broker.start()
    finally:
        del os.environ["COMET_MAX_INFLIGHT_REQUESTS"]
    with grpc.insecure_channel(broker.address, options=OWN_CONNECTION) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        stub.CreateTopic(pb.CreateTopicRequest(name=TOPIC, partitions=1), timeout=DEADLINE_S)
    yield broker
    alive = broker.running
    assert broker.stop() == 0, broker.log_text()[-3000:]
    assert alive, broker.log_text()[-3000:]


@pytest.fixture
def control_channel(limited: LocalBroker) -> Iterator[grpc.Channel]:
    """A connection of the test's own, never saturated by it."""
    with grpc.insecure_channel(limited.address, options=OWN_CONNECTION) as channel:
        yield channel


@pytest.fixture
def control(control_channel: grpc.Channel) -> broker_pb2_grpc.BrokerServiceStub:
    """A stub on the control connection."""
    return broker_pb2_grpc.BrokerServiceStub(control_channel)


def log_end(stub: broker_pb2_grpc.BrokerServiceStub) -> int:
    request = pb.ListOffsetsRequest(topic=TOPIC, partition=0, timestamp_ms=-1)
    return stub.ListOffsets(request, timeout=DEADLINE_S).offset


def stored(stub: broker_pb2_grpc.BrokerServiceStub) -> bytes:
    request = pb.FetchRequest(topic=TOPIC, partition=0, offset=0, max_bytes=1 << 20)
    return stub.Fetch(request, timeout=DEADLINE_S).records


def long_poll(stub: broker_pb2_grpc.BrokerServiceStub, offset: int) -> grpc.Future:
    """A Fetch at the log end that waits LONG_POLL_MS for data."""
    request = pb.FetchRequest(topic=TOPIC, partition=0, offset=offset, max_wait_ms=LONG_POLL_MS)
    return stub.Fetch.future(request, timeout=LONG_POLL_MS / 1000 + DEADLINE_S)


def produce_request(value_size: int) -> pb.ProduceBatchRequest:
    batch = encode_batch([(None, b"v" * value_size)])
    return pb.ProduceBatchRequest(topic=TOPIC, partition=0, records=batch, acks=1)


def sized_requests(limit: int) -> tuple[pb.ProduceBatchRequest, pb.ProduceBatchRequest]:
    """(the largest produce request of at most `limit` bytes, the smallest above it)."""
    size = limit - 200
    while produce_request(size + 1).ByteSize() <= limit:
        size += 1
    at_most, above = produce_request(size), produce_request(size + 1)
    assert limit - 4 <= at_most.ByteSize() <= limit < above.ByteSize() <= limit + 4
    return at_most, above


def test_request_size_limit_refuses_one_byte_over_and_accepts_the_limit(control):
    at_most, above = sized_requests(LIMIT_BYTES)
    end, before = log_end(control), stored(control)
    with pytest.raises(grpc.RpcError) as refused:
        control.ProduceBatch(above, timeout=DEADLINE_S)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{above.ByteSize()} vs. {LIMIT_BYTES}" in refused.value.details()
    assert (log_end(control), stored(control)) == (end, before), "a refused request wrote"

    reply = control.ProduceBatch(at_most, timeout=DEADLINE_S)
    assert (reply.base_offset, reply.last_offset) == (end, end)
    assert log_end(control) == end + 1


def refusal(stub: broker_pb2_grpc.BrokerServiceStub) -> grpc.RpcError | None:
    """The error of a cheap counted call, or None when it was served."""
    try:
        stub.ListTopics(pb.ListTopicsRequest(), timeout=DEADLINE_S)
    except grpc.RpcError as exc:
        return exc
    return None


def connected(address: str, options: list[tuple[str, int]] | None = None) -> grpc.Channel:
    """A channel whose connection the broker has accepted.

    Connections of earlier tests count against --max-connections until the
    broker has seen them close, so a new one may be refused for a moment.
    """
    channel = grpc.insecure_channel(address, options=options)
    stub = broker_pb2_grpc.BrokerServiceStub(channel)
    wait_for(lambda: refusal(stub) is None, DEADLINE_S, f"a connection to {address}")
    return channel


def test_streams_per_connection_wait_in_the_client_instead_of_failing(limited, control):
    with connected(limited.address, OWN_CONNECTION) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        polls = [long_poll(stub, log_end(stub)) for _ in range(STREAMS)]
        try:
            # every stream of the connection is taken: the next call waits for one
            with pytest.raises(grpc.RpcError) as waited:
                stub.ListTopics(pb.ListTopicsRequest(), timeout=0.5)
            assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            control.ListTopics(pb.ListTopicsRequest(), timeout=DEADLINE_S)  # others unaffected
            queued = stub.ListTopics.future(pb.ListTopicsRequest(), timeout=DEADLINE_S)
            polls[0].cancel()
            assert queued.result(timeout=DEADLINE_S) is not None  # ran once a stream was free
        finally:
            for call in polls:
                call.cancel()


@pytest.mark.parametrize("release", ["cancel", "close-channel"])
def test_inflight_limit_refuses_calls_naming_the_flag_and_recovers(
    limited, control_channel, control, release
):
    end, before = log_end(control), stored(control)
    for _ in range(2):  # a slot leaked or released twice shows in the second round
        channels = [connected(limited.address, OWN_CONNECTION), connected(limited.address)]
        stubs = [broker_pb2_grpc.BrokerServiceStub(c) for c in channels]
        polls = [long_poll(stubs[i % 2], end) for i in range(INFLIGHT)]
        try:
            wait_for(
                lambda: refusal(control) is not None, DEADLINE_S, f"{INFLIGHT} long-polls in flight"
            )
            error = refusal(control)
            assert error is not None
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"--max-inflight-requests={INFLIGHT}" in error.details()
            assert isinstance(from_rpc_error(error), BrokerUnavailableError)  # retriable
            with pytest.raises(grpc.RpcError) as produce:
                control.ProduceBatch(produce_request(10), timeout=DEADLINE_S)
            assert produce.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # health is not counted: an overloaded broker still says it is serving
            health = health_pb2_grpc.HealthStub(control_channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            if release == "cancel":
                for call in polls:
                    call.cancel()
            else:
                for channel in channels:
                    channel.close()
            wait_for(lambda: refusal(control) is None, DEADLINE_S, "the broker to serve again")
        finally:
            for channel in channels:
                channel.close()
    assert (log_end(control), stored(control)) == (end, before), "a refused produce wrote"


def test_connections_over_the_limit_are_closed_and_others_keep_working(limited, control):
    channels = [grpc.insecure_channel(limited.address, options=OWN_CONNECTION) for _ in range(2)]
    try:
        stubs = [broker_pb2_grpc.BrokerServiceStub(c) for c in channels]
        for stub in [control, *stubs]:  # three connections: the limit
            wait_for(
                lambda stub=stub: refusal(stub) is None, DEADLINE_S, "connections below the limit"
            )
        with grpc.insecure_channel(limited.address, options=OWN_CONNECTION) as extra:
            with pytest.raises(grpc.RpcError) as closed:
                broker_pb2_grpc.BrokerServiceStub(extra).ListTopics(
                    pb.ListTopicsRequest(), timeout=2.0
                )
            assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refusal(control) is None and refusal(stubs[0]) is None
        channels.pop().close()

        def new_connection_served() -> bool:
            with grpc.insecure_channel(limited.address, options=OWN_CONNECTION) as channel:
                return refusal(broker_pb2_grpc.BrokerServiceStub(channel)) is None

        wait_for(new_connection_served, DEADLINE_S, "a new connection once another one closed")
    finally:
        for channel in channels:
            channel.close()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-concurrent-streams", "0"),
        ("--max-connections", "-1"),
        ("--max-inflight-requests", "many"),
    ],
)
def test_bad_limit_values_exit_naming_the_flag(tmp_path: Path, flag: str, value: str):
    argv = [sys.executable, "-m", "comet.cli.broker", "--etcd", "", "--data-dir", str(tmp_path)]
    argv += ["--addr", f"127.0.0.1:{free_port()}", flag, value]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert re.search(re.escape(flag), done.stderr), done.stderr
