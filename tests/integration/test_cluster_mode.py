"""Cluster mode with real etcd and three real brokers: metadata, failure detection, routing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comet import aio
from comet.cli.local_broker import free_port
from comet.client import (
    CometClient,
    Consumer,
    ConsumerConfig,
    Message,
    ProducerConfig,
    TopicProducer,
)
from comet.errors import InvalidRequestError, NotLeaderError
from comet.records import encode_batch
from comet.v1 import broker_pb2 as pb
from tests.integration.cluster import LEASE_TTL_S, Cluster
from tests.polling import wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path).start()
    try:
        yield c
    finally:
        c.close()


def test_a_topic_created_at_one_broker_is_visible_at_all_within_a_second(
    cluster: Cluster,
) -> None:
    with CometClient(cluster.brokers["b0"].address) as client:
        started = time.monotonic()
        client.create_topic("everywhere", 6, 3)
    for broker_id in cluster.brokers:
        info = wait_for(
            lambda b=broker_id: cluster.partition("everywhere", 5, via=b),
            1.0,
            f"topic at {broker_id}",
        )
        assert set(info.replicas) == {"b0", "b1", "b2"}
    assert time.monotonic() - started < 1.0
    with CometClient(cluster.brokers["b1"].address) as client:
        leaders = [p.leader for p in client.metadata(["everywhere"]).topics["everywhere"]]
    assert sorted(leaders) == ["b0", "b0", "b1", "b1", "b2", "b2"]  # leaders balanced


def test_replication_factor_above_the_live_brokers_is_refused(cluster: Cluster) -> None:
    with CometClient(cluster.bootstrap) as client, pytest.raises(InvalidRequestError, match="3"):
        client.create_topic("too-wide", 1, 4)


def test_produce_at_a_non_leader_names_the_leader(cluster: Cluster) -> None:
    with CometClient(cluster.bootstrap) as client:
        client.create_topic("routed", 1, 1)
    for b in cluster.brokers:  # every broker learns of the topic through its etcd watch
        wait_for(lambda b=b: cluster.partition("routed", 0, via=b), 2, f"'routed' at {b}")
    leader = cluster.partition("routed", 0).leader
    other = cluster.brokers[next(b for b in cluster.brokers if b != leader)].address
    request = pb.ProduceBatchRequest(
        topic="routed", partition=0, records=encode_batch([(b"k", b"v")]), acks=1
    )

    async def produce_at_the_wrong_broker() -> None:
        async with aio.CometClient(other) as raw:
            await raw.call_address(other, lambda s: s.ProduceBatch(request, timeout=5))

    with pytest.raises(NotLeaderError) as info:
        asyncio.run(produce_at_the_wrong_broker())
    assert info.value.leader_id == leader
    assert info.value.leader_address == cluster.brokers[leader].address
    with CometClient(other) as client:  # the client library follows the leader by itself
        # the refused produce wrote nothing: this one is the first record
        assert client.produce_batch("routed", 0, encode_batch([(b"k", b"v")])).base_offset == 0
        assert client.list_offsets("routed", 0) == 1


def test_killed_broker_leaves_metadata_and_its_partitions_move_or_go_offline(
    cluster: Cluster,
) -> None:
    with CometClient(cluster.bootstrap) as client:
        client.create_topic("solo", 3, 1)
        client.create_topic("trio", 3, 3)
    for b in cluster.brokers:
        wait_for(lambda b=b: cluster.partition("trio", 2, via=b), 2, f"'trio' at {b}")
    victim = cluster.partition("solo", 0).leader
    led_trio = [p for p in range(3) if cluster.partition("trio", p).leader == victim]
    killed = time.monotonic()
    cluster.brokers[victim].kill()
    wait_for(lambda: victim not in cluster.live_brokers(), LEASE_TTL_S + 5, "the broker gone")
    gone_after = time.monotonic() - killed
    assert gone_after < LEASE_TTL_S + 3
    wait_for(lambda: cluster.partition("solo", 0).leader == "", 5, "solo/0 offline")
    for p in led_trio:
        info = wait_for(
            lambda p=p: (i := cluster.partition("trio", p)).leader not in ("", victim) and i,
            5,
            f"trio/{p} led elsewhere",
        )
        assert info.leader in info.isr and info.leader_epoch >= 1
    cluster.brokers[victim].start()  # back: it leads its offline partition again
    info = wait_for(lambda: (i := cluster.partition("solo", 0)).leader == victim and i, 10, "back")
    assert info.leader_epoch >= 2


def test_killing_the_controller_elects_another(cluster: Cluster) -> None:
    old = wait_for(cluster.controller, 5, "a controller")
    killed = time.monotonic()
    cluster.brokers[old].kill()
    new = wait_for(lambda: (c := cluster.controller()) not in ("", old) and c, 10, "new controller")
    assert new in cluster.brokers and time.monotonic() - killed < LEASE_TTL_S + 5


def test_an_etcd_restart_leaves_brokers_serving_and_registered(cluster: Cluster) -> None:
    with CometClient(cluster.bootstrap) as client:
        client.create_topic("before", 1, 3)
        client.produce_batch("before", 0, encode_batch([(b"k", b"1")]), acks="all")
    cluster.etcd.stop()
    with CometClient(cluster.bootstrap) as client:  # data keeps flowing without etcd
        assert client.produce_batch("before", 0, encode_batch([(b"k", b"2")]), acks=1)
    cluster.etcd.start()
    wait_for(lambda: cluster.live_brokers() == {"b0", "b1", "b2"}, 20, "re-registered")
    with CometClient(cluster.bootstrap) as client:
        client.create_topic("after", 1, 3)
        for b in cluster.brokers:
            wait_for(lambda b=b: cluster.partition("after", 0, via=b), 5, f"'after' at {b}")
        assert client.produce_batch("after", 0, encode_batch([(b"k", b"v")]), acks="all")
    assert all(b.running for b in cluster.brokers.values())


def test_group_offsets_survive_a_coordinator_failover(cluster: Cluster) -> None:
    group = "failover-group"
    cfg = ProducerConfig(cluster.bootstrap, topic="orders", partitions=3, replication_factor=3)
    with TopicProducer(cfg) as producer:
        for i in range(30):
            producer.send(b"k%d" % i, b"%d" % i)
    seen: list[Message] = []
    consumer_cfg = ConsumerConfig(cluster.bootstrap, group=group, session_timeout=3.0)
    with Consumer(consumer_cfg) as consumer:
        consumer.subscribe("orders", seen.append)
        wait_for(lambda: len(seen) >= 30, 20, "30 records")
    address = asyncio.run(_coordinator_address(cluster.bootstrap, group))
    with CometClient(cluster.bootstrap) as client:
        committed = client.fetch_offsets(group)
    assert sum(committed.values()) == 30
    owner = next(b for b, p in cluster.brokers.items() if p.address == address)
    cluster.brokers[owner].kill()
    wait_for(lambda: owner not in cluster.live_brokers(), LEASE_TTL_S + 5, "coordinator gone")
    with TopicProducer(ProducerConfig(cluster.running_bootstrap(), topic="orders")) as producer:
        for i in range(30, 35):
            producer.send(b"k%d" % i, b"%d" % i)
    later: list[Message] = []
    with Consumer(ConsumerConfig(cluster.running_bootstrap(), group=group)) as consumer:
        consumer.subscribe("orders", later.append)
        wait_for(lambda: len(later) >= 5, 30, "the 5 new records")
    assert sorted(int(m.value) for m in later) == [30, 31, 32, 33, 34]


async def _coordinator_address(bootstrap: str, group: str) -> str:
    async with aio.CometClient(bootstrap) as client:
        return await client.coordinator_address(group)


def test_a_dead_first_bootstrap_address_is_skipped(cluster: Cluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with CometClient(f"{dead},{cluster.bootstrap}") as client:
        client.create_topic("via-second", 1, 2)
        assert client.produce_batch("via-second", 0, encode_batch([(b"k", b"v")])).base_offset == 0


def test_original_replicate_writes_only_to_followers(cluster: Cluster) -> None:
    with CometClient(cluster.bootstrap) as client:
        client.create_topic("legacy", 1, 3)
    for b in cluster.brokers:
        wait_for(lambda b=b: cluster.partition("legacy", 0, via=b), 2, f"'legacy' at {b}")
    with CometClient(cluster.bootstrap) as client:
        client.produce_batch("legacy", 0, encode_batch([(b"k", b"v")]), acks="all")
    info = cluster.partition("legacy", 0)
    follower = cluster.brokers[next(r for r in info.replicas if r != info.leader)].address

    async def replicate(address: str, offset: int) -> None:
        request = pb.ReplicateRequest(
            topic="legacy", partition=0, records=[pb.WalRecord(offset=offset, value=b"v")]
        )
        async with aio.CometClient(address) as raw:
            await raw.call_address(address, lambda s: s.Replicate(request, timeout=5))

    asyncio.run(replicate(follower, 0))  # already there: skipped, success
    with pytest.raises(InvalidRequestError, match="gap"):
        asyncio.run(replicate(follower, 5))
    with pytest.raises(NotLeaderError, match="only to followers"):
        asyncio.run(replicate(cluster.brokers[info.leader].address, 1))
