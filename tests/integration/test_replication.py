"""Replication under real faults: three brokers, RF=3, min.insync.replicas=2.

Every test starts its own etcd and brokers with 2-second leases and a
1.5-second replica lag bound, kills (SIGKILL) or pauses (SIGSTOP) real
processes, and checks what was acknowledged against what is stored.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comet import aio
from comet.client import CometClient
from comet.errors import CometError, NotEnoughReplicasError
from comet.records import RecordBatchBuilder, decode_batches, encode_batch
from comet.v1 import broker_pb2 as pb
from tests.integration.cluster import LEASE_TTL_S, Cluster
from tests.polling import wait_for

LAG_MS = 1500
TOPIC_CONFIG = {"min.insync.replicas": "2"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, extra_args=["--replica-lag-time-max-ms", str(LAG_MS)]).start()
    try:
        yield c
    finally:
        c.close()


def create(cluster: Cluster, topic: str) -> str:
    """Create an RF=3 topic with one partition; return its leader once all brokers know it."""
    with CometClient(cluster.bootstrap) as client:
        client.create_topic(topic, 1, 3, TOPIC_CONFIG)
    for b in cluster.brokers:
        wait_for(lambda b=b: cluster.partition(topic, 0, via=b), 3, f"{topic} at {b}")
    return cluster.partition(topic, 0).leader


def read_all(address: str, topic: str) -> list[tuple[int, bytes]]:
    """(offset, value) of every record below the high watermark, from the leader."""
    out: list[tuple[int, bytes]] = []
    with CometClient(address, timeout=5) as client:
        end = client.list_offsets(topic, 0)
        offset = 0
        while offset < end:
            fetched = client.fetch(topic, 0, offset)
            for record in decode_batches(fetched.records, offset):
                out.append((record.offset, record.value))
                offset = record.offset + 1
    return out


def local_log_end(cluster: Cluster, broker_id: str, topic: str) -> int:
    """The log end offset of the partition's replica on `broker_id` (its own view)."""
    with CometClient(cluster.brokers[broker_id].address, timeout=3) as client:
        return client.describe_topic(topic).partitions[0].log_end_offset


def produce_all(cluster: Cluster, topic: str, value: bytes, timeout_ms: int = 5000) -> int:
    with CometClient(cluster.running_bootstrap(), timeout=10) as client:
        return client.produce_batch(
            topic, 0, encode_batch([(None, value)]), acks="all", timeout_ms=timeout_ms
        ).base_offset


def test_a_restarted_follower_catches_up_and_rejoins_the_isr(cluster: Cluster) -> None:
    leader = create(cluster, "catch-up")
    follower = next(b for b in cluster.brokers if b != leader)
    for i in range(50):
        produce_all(cluster, "catch-up", b"a%d" % i)
    cluster.brokers[follower].kill()
    wait_for(
        lambda: follower not in cluster.partition("catch-up", 0).isr, LAG_MS / 1000 + 5, "shrink"
    )
    for i in range(50):  # two in-sync replicas left: acks=all still works
        produce_all(cluster, "catch-up", b"b%d" % i)
    cluster.brokers[follower].start()
    wait_for(lambda: follower in cluster.partition("catch-up", 0).isr, 15, "the follower back")
    assert local_log_end(cluster, follower, "catch-up") >= 100
    values = [v for _, v in read_all(cluster.brokers[leader].address, "catch-up")]
    assert values == [b"a%d" % i for i in range(50)] + [b"b%d" % i for i in range(50)]


def test_with_two_of_three_down_produce_fails_cleanly_then_recovers(cluster: Cluster) -> None:
    leader = create(cluster, "quorum")
    produce_all(cluster, "quorum", b"before")
    followers = [b for b in cluster.brokers if b != leader]
    for b in followers:
        cluster.brokers[b].kill()
    wait_for(lambda: cluster.partition("quorum", 0).isr == (leader,), LAG_MS / 1000 + 5, "ISR=1")
    address = cluster.brokers[leader].address
    with CometClient(address, timeout=5) as client:
        end_before = client.list_offsets("quorum", 0)
        with pytest.raises(NotEnoughReplicasError, match=r"min\.insync\.replicas=2"):
            client.produce_batch("quorum", 0, encode_batch([(None, b"refused")]), acks="all")
        assert client.list_offsets("quorum", 0) == end_before  # nothing partial is visible
        assert local_log_end(cluster, leader, "quorum") == end_before  # nor stored
    cluster.brokers[followers[0]].start()
    wait_for(lambda: len(cluster.partition("quorum", 0).isr) == 2, 15, "ISR back to 2")
    assert produce_all(cluster, "quorum", b"after") == end_before
    assert [v for _, v in read_all(address, "quorum")] == [b"before", b"after"]


def test_a_paused_leader_cannot_acknowledge_and_then_follows(cluster: Cluster) -> None:
    old = create(cluster, "paused")
    produce_all(cluster, "paused", b"committed")
    old_address = cluster.brokers[old].address
    cluster.brokers[old].pause()
    outcome: dict[str, object] = {}

    def produce_to_the_paused_leader() -> None:
        async def attempt() -> None:
            async with aio.CometClient(old_address, timeout=30) as raw:
                request = pb.ProduceBatchRequest(
                    topic="paused",
                    partition=0,
                    records=encode_batch([(None, b"from-the-old-leader")]),
                    acks=-1,
                    timeout_ms=20_000,
                )
                await raw.call_address(old_address, lambda s: s.ProduceBatch(request, timeout=25))

        try:
            asyncio.run(attempt())
            outcome["acked"] = True
        except CometError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=produce_to_the_paused_leader)
    sender.start()
    new = wait_for(
        lambda: (leader := cluster.partition("paused", 0).leader) not in ("", old) and leader,
        LEASE_TTL_S + 10,
        "a new leader",
    )
    new_address = cluster.brokers[new].address
    with CometClient(new_address, timeout=10) as client:
        client.produce_batch("paused", 0, encode_batch([(None, b"new-1")]), acks="all")
    cluster.brokers[old].resume()
    sender.join(40)
    assert "acked" not in outcome, "a deposed leader acknowledged a write"
    assert isinstance(outcome.get("error"), CometError)
    with CometClient(new_address, timeout=10) as client:
        client.produce_batch("paused", 0, encode_batch([(None, b"new-2")]), acks="all")
    stored = [v for _, v in read_all(new_address, "paused")]
    assert stored == [b"committed", b"new-1", b"new-2"]
    wait_for(
        lambda: local_log_end(cluster, old, "paused") == 3,
        15,
        "the old leader truncated, following",
    )
    wait_for(lambda: old in cluster.partition("paused", 0).isr, 15, "the old leader in sync")


def test_kill_the_leader_during_an_acks_all_stream(cluster: Cluster) -> None:
    old = create(cluster, "stream")
    acked: dict[bytes, int] = {}
    stop = threading.Event()
    first_ack_after_kill: list[float] = []
    killed_at: list[float] = []

    producer_id = asyncio.run(_init_producer_id(cluster.bootstrap))

    def stream() -> None:
        with CometClient(cluster.bootstrap, timeout=10) as client:
            i = 0
            while not stop.is_set() and i < 2_000:
                value = b"v%05d" % i
                # idempotent: a retry resends the same bytes (same producer id and
                # sequence), which the leader, old or new, stores at most once
                builder = RecordBatchBuilder(
                    producer_id=producer_id, producer_epoch=0, base_sequence=i
                )
                builder.append(None, value)
                batch = builder.build()
                try:
                    result = client.produce_batch("stream", 0, batch, acks="all", timeout_ms=3000)
                except CometError:
                    time.sleep(0.05)
                    continue
                acked[value] = result.base_offset
                if killed_at and not first_ack_after_kill:
                    first_ack_after_kill.append(time.monotonic() - killed_at[0])
                i += 1

    producer = threading.Thread(target=stream)
    producer.start()
    wait_for(lambda: len(acked) >= 100, 30, "100 acks before the kill")
    killed_at.append(time.monotonic())
    cluster.brokers[old].kill()
    wait_for(lambda: len(acked) >= 250, 60, "acks on the new leader")
    stop.set()
    producer.join(30)
    new = cluster.partition("stream", 0).leader
    assert new not in ("", old)
    stored = read_all(cluster.brokers[new].address, "stream")
    offsets = [o for o, _ in stored]
    assert offsets == list(range(len(stored)))  # no holes
    at = dict(stored)
    lost = {v: o for v, o in acked.items() if at.get(o) != v}
    assert not lost, f"acknowledged records lost or moved: {sorted(lost.items())[:5]}"
    values = [v for _, v in stored]
    assert len(values) == len(set(values)), "a retried batch was stored twice"
    assert first_ack_after_kill and first_ack_after_kill[0] < LEASE_TTL_S + 8


async def _init_producer_id(bootstrap: str) -> int:
    async with aio.CometClient(bootstrap) as client:
        reply = await client.call_any(
            lambda s: s.InitProducerId(pb.InitProducerIdRequest(), timeout=5)
        )
        return reply.producer_id
