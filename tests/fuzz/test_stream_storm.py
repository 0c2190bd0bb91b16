"""Thousands of concurrent calls opened and dropped against a real broker.

Each round opens CALLS long-poll fetches over a few connections (and a
burst of short-lived connections with calls of their own), waits until the
broker has every one of them in flight, then drops them all abruptly: half
cancelled by the client, the rest by closing their connection mid-call.
The broker must stay healthy, give back every in-flight slot, keep its
memory and open descriptors bounded, and leave the stored bytes untouched.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comet.cli.local_broker import LocalBroker
from comet.records import encode_batch
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc
from tests.polling import await_for

CHANNELS = 4
CALLS_PER_CHANNEL = 750  # below --max-concurrent-streams (1000 by default)
CALLS = CHANNELS * CALLS_PER_CHANNEL
WAVE = 250
BURST_CONNECTIONS = 100  # short-lived connections per round, 2 long-polls each
ROUNDS = 2
PARTITIONS = 4
TOPIC = "storm"
DEADLINE_S = 20.0
RSS_GROWTH_LIMIT = 40 * 1024 * 1024  # after the first round has warmed the allocator up
RSS_PEAK_LIMIT = 400 * 1024 * 1024
FD_SLACK = 16
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
INFLIGHT_LIMIT = CALLS + 2 * BURST_CONNECTIONS


@pytest.fixture(scope="module")
def storm_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker whose --max-inflight-requests is exactly what one round opens."""
    root = tmp_path_factory.mktemp("storm")
    broker = LocalBroker(
        root / "data",
        extra_args=["--max-inflight-requests", str(INFLIGHT_LIMIT)],
        log_path=root / "broker.log",
    )
    broker.start()
    yield broker
    alive = broker.running
    assert broker.stop() == 0, broker.log_text()[-3000:]
    assert alive, broker.log_text()[-3000:]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """Number of open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def files_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory` (the partition logs of a topic)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


async def picked_up(stub: broker_pb2_grpc.BrokerServiceStub) -> None:
    """Return once a cheap call on `stub`'s connection was answered (served or refused)."""
    try:
        await stub.ListTopics(pb.ListTopicsRequest(), timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()


class Storm:
    """The calls of one round and the connections that carry them."""

    def __init__(self, address: str, ends: list[int]) -> None:
        self.address = address
        self.ends = ends
        self.channels = [
            grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(CHANNELS)
        ]
        self.burst = [
            grpc.aio.insecure_channel(address, options=OWN_CONNECTION)
            for _ in range(BURST_CONNECTIONS)
        ]
        self.calls: list[grpc.aio.UnaryUnaryCall] = []

    async def open(self) -> None:
        """Start every long-poll: CALLS on the shared channels, two per burst connection.

        gRPC cancels calls a server has not picked up while more than about a
        thousand wait (its pending-request protection), so the calls go out in
        waves: a cheap call after each wave, answered or refused, was picked
        up after the wave before it on that connection.
        """
        for i, channel in enumerate(self.channels):
            stub = broker_pb2_grpc.BrokerServiceStub(channel)
            for start in range(0, CALLS_PER_CHANNEL, WAVE):
                count = min(WAVE, CALLS_PER_CHANNEL - start)
                self.calls += [self._long_poll(stub, (i + j) % PARTITIONS) for j in range(count)]
                await picked_up(stub)
        for i, channel in enumerate(self.burst):
            stub = broker_pb2_grpc.BrokerServiceStub(channel)
            self.calls += [self._long_poll(stub, i % PARTITIONS) for _ in range(2)]

    def _long_poll(self, stub, partition: int) -> grpc.aio.UnaryUnaryCall:
        request = pb.FetchRequest(
            topic=TOPIC, partition=partition, offset=self.ends[partition], max_wait_ms=60_000
        )
        return stub.Fetch(request, timeout=120)

    async def drop(self) -> None:
        """Cancel half of the calls, then close every connection under the rest."""
        for call in self.calls[::2]:
            call.cancel()
        await asyncio.gather(*(channel.close() for channel in self.channels + self.burst))
        results = await asyncio.gather(*self.calls, return_exceptions=True)
        served = [r for r in results if not isinstance(r, BaseException)]
        assert not served, f"{len(served)} long-polls answered although nothing was produced"


async def storm(broker: LocalBroker) -> dict[str, list[int]]:
    """Run the rounds; return RSS and descriptor counts measured along the way."""
    figures: dict[str, list[int]] = {"rss_idle": [], "rss_peak": []}
    async with grpc.aio.insecure_channel(broker.address, options=OWN_CONNECTION) as control:
        stub = broker_pb2_grpc.BrokerServiceStub(control)
        health = health_pb2_grpc.HealthStub(control)

        async def refused() -> bool:
            try:
                await stub.ListTopics(pb.ListTopicsRequest(), timeout=DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                return True
            return False

        async def served() -> bool:
            return not await refused()

        ends = []
        for p in range(PARTITIONS):
            reply = await stub.ListOffsets(
                pb.ListOffsetsRequest(topic=TOPIC, partition=p, timestamp_ms=-1), timeout=10
            )
            ends.append(reply.offset)
        fds_start = open_fds(broker.pid)

        async def sockets_released() -> bool:
            gc.collect()  # a channel's connection goes with its last Python reference
            return open_fds(broker.pid) <= fds_start + FD_SLACK

        for _ in range(ROUNDS):
            figures["rss_peak"].append(await one_round(broker, ends, refused))
            await await_for(
                served, DEADLINE_S, "the broker to serve again after the calls were dropped"
            )
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await await_for(
                sockets_released, DEADLINE_S, f"descriptors back to {fds_start} + {FD_SLACK}"
            )
            figures["rss_idle"].append(rss_bytes(broker.pid))
    return figures


async def one_round(broker: LocalBroker, ends: list[int], refused) -> int:
    """Open a round of calls, wait until the broker holds all of them, drop them; peak RSS."""
    round_ = Storm(broker.address, ends)
    await round_.open()
    await await_for(refused, DEADLINE_S, f"{INFLIGHT_LIMIT} calls in flight at the broker")
    peak = rss_bytes(broker.pid)
    await round_.drop()
    return peak


def test_thousands_of_dropped_calls_leave_the_broker_healthy_and_the_data_intact(storm_broker):
    broker = storm_broker
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        stub.CreateTopic(pb.CreateTopicRequest(name=TOPIC, partitions=PARTITIONS), timeout=10)
        for p in range(PARTITIONS):
            for b in range(3):
                batch = encode_batch(
                    [(b"k%d" % i, b"storm-%d-%d-%d" % (p, b, i)) for i in range(5)]
                )
                request = pb.ProduceBatchRequest(topic=TOPIC, partition=p, records=batch, acks=1)
                stub.ProduceBatch(request, timeout=10)

        def fetched() -> list[bytes]:
            return [
                stub.Fetch(pb.FetchRequest(topic=TOPIC, partition=p, offset=0), timeout=10).records
                for p in range(PARTITIONS)
            ]

        before, files_before = fetched(), files_digest(broker.data_dir / TOPIC)
        figures = asyncio.run(storm(broker))
        assert fetched() == before
    assert files_digest(broker.data_dir / TOPIC) == files_before
    rss_idle = figures["rss_idle"]
    assert max(figures["rss_peak"]) < RSS_PEAK_LIMIT, figures
    assert rss_idle[-1] - rss_idle[0] < RSS_GROWTH_LIMIT, figures
