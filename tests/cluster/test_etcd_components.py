"""Pieces of the etcd coordinator: controller rules, key layout, values, the watcher."""

from __future__ import annotations

from dataclasses import replace

import aetcd
import pytest

from comet.cli.local_etcd import EtcdProcess
from comet.cluster import BrokerRecord, PartitionState, TopicSpec
from comet.cluster.etcd import ops
from comet.cluster.etcd.cache import MetadataCache
from comet.cluster.etcd.controller import next_leadership
from comet.cluster.etcd.keys import (
    BadValueError,
    KeyLayout,
    MetaKey,
    decode_broker,
    decode_int,
    decode_partition,
    decode_topic,
    encode_broker,
    encode_partition,
    encode_topic,
    prefix_end,
)
from comet.cluster.etcd.session import EtcdSession, parse_endpoint
from comet.cluster.etcd.watcher import MetadataWatcher

from .conftest import eventually

STATE = PartitionState("t", 0, ("b1", "b2", "b3"), "b1", 4, ("b1", "b3"), version=9)

# --- controller rules ---------------------------------------------------------------


def test_a_live_leader_is_left_alone() -> None:
    assert next_leadership(STATE, {"b1"}) is None


def test_leadership_moves_to_the_first_live_isr_replica_in_replica_order() -> None:
    moved = next_leadership(STATE, {"b2", "b3"})  # b2 is live but not in the ISR
    # the dead leader leaves the ISR with the election; b2 joins only once caught up
    assert moved == replace(STATE, leader="b3", leader_epoch=5, isr=("b3",))


def test_without_a_live_isr_replica_the_partition_goes_offline_once() -> None:
    offline = next_leadership(STATE, {"b2"})
    assert offline == replace(STATE, leader="", leader_epoch=5)
    assert next_leadership(offline, {"b2"}) is None  # no unclean election, no epoch churn


def test_unclean_election_only_when_the_topic_allows_it() -> None:
    assert next_leadership(STATE, {"b2"}, unclean=False).leader == ""
    unclean = next_leadership(STATE, {"b2"}, unclean=True)
    assert (unclean.leader, unclean.leader_epoch, unclean.isr) == ("b2", 5, ("b2",))


def test_an_offline_partition_comes_back_with_its_isr_replica() -> None:
    offline = replace(STATE, leader="", leader_epoch=5)
    assert next_leadership(offline, {"b3"}) == replace(
        STATE, leader="b3", leader_epoch=6, isr=("b3",)
    )


# --- key layout and values -----------------------------------------------------------


def test_names_are_escaped_so_no_name_is_a_prefix_of_another() -> None:
    layout = KeyLayout("/c/")
    assert layout.prefix == "/c"
    assert layout.group_offsets("t", "a/b") == b"/c/offsets/t/a%2Fb/"
    assert not layout.group_offsets("t", "a/b").startswith(layout.group_offsets("t", "a"))
    assert layout.partitions("t") == b"/c/meta/partitions/t/"
    assert not layout.partition("tt", 0).startswith(layout.partitions("t"))
    assert layout.parse_offset(layout.offset("t.1", "g/x", 7)) == ("t.1", "g/x", 7)
    assert layout.parse_meta(layout.broker("b/1")) == MetaKey("broker", "b/1")
    assert layout.parse_meta(layout.partition("t", 12)) == MetaKey("partition", "t", 12)
    assert layout.parse_meta(layout.controller) == MetaKey("controller")
    assert layout.parse_meta(layout.meta + b"something/else") is None
    with pytest.raises(ValueError, match="prefix"):
        KeyLayout("/")


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"


def test_values_round_trip() -> None:
    broker = BrokerRecord("b1", "10.0.0.1:6174")
    assert decode_broker(encode_broker(broker)) == broker
    assert b"peer_address" not in encode_broker(broker)  # the old format when not set
    split = BrokerRecord("b1", "10.0.0.1:6174", "10.1.0.1:7174")
    assert decode_broker(encode_broker(split)) == split
    assert split.peer_dial_address == "10.1.0.1:7174"
    assert broker.peer_dial_address == "10.0.0.1:6174"
    spec = TopicSpec("t", 3, 2, {"retention.ms": "5"})
    assert decode_topic("t", encode_topic(spec)) == spec
    assert decode_partition("t", 0, encode_partition(STATE), 9) == STATE


@pytest.mark.parametrize(
    "value",
    [b"{", b"[]", b'{"replicas": ["b1"], "leader": 1, "leader_epoch": 0, "isr": []}',
     b'{"replicas": "b1", "leader": "b1", "leader_epoch": 0, "isr": []}',
     b'{"replicas": [], "leader": "", "leader_epoch": -1, "isr": []}'],
)  # fmt: skip
def test_a_bad_partition_value_is_named(value: bytes) -> None:
    with pytest.raises(BadValueError, match="partition t/0"):
        decode_partition("t", 0, value, 1)


def test_bad_counters_and_topics_are_named() -> None:
    with pytest.raises(BadValueError, match="counter"):
        decode_int(b"-1", "counter")
    with pytest.raises(BadValueError, match="topic 't'"):
        decode_topic("t", b'{"partitions": 0, "replication_factor": 1}')
    with pytest.raises(BadValueError, match="peer_address"):
        decode_broker(b'{"address": "h:1", "id": "b1", "peer_address": 7}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:2379", ("127.0.0.1", 2379)), ("http://etcd:2379/", ("etcd", 2379)),
     ("[::1]:23", ("::1", 23))],
)  # fmt: skip
def test_endpoints_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["etcd", "etcd:", ":2379", "etcd:99999"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_endpoint(text)


# --- cache and watcher against a real etcd ---------------------------------------------


async def test_a_bad_value_in_etcd_is_ignored_not_fatal(
    etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    layout = KeyLayout(etcd_prefix)
    session = EtcdSession([etcd_server.endpoint])
    try:
        await session.txn([], [ops.put(layout.topic("bad"), b"{nope")], what="test")
        await session.txn(
            [], [ops.put(layout.topic("ok"), encode_topic(TopicSpec("ok", 1, 1)))], what="test"
        )
        cache = MetadataCache(layout)
        await MetadataWatcher(session, layout, cache).load()
        assert [t.name for t in cache.topic_list()] == ["ok"]
    finally:
        await session.close()


async def test_the_watch_resumes_from_a_snapshot_when_its_revision_was_compacted(
    etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    layout = KeyLayout(etcd_prefix)
    session = EtcdSession([etcd_server.endpoint])
    cache = MetadataCache(layout)
    watcher = MetadataWatcher(session, layout, cache)
    try:
        await watcher.load()
        loaded_at = cache.revision
        # changes the watcher has not seen, then history compacted past them
        spec = TopicSpec("late", 2, 1)
        for _ in range(3):
            written = await session.txn(
                [], [ops.put(layout.topic("late"), encode_topic(spec))], what="test"
            )
        async with aetcd.Client("127.0.0.1", etcd_server.client_port) as admin:
            await admin.compact(written.header.revision)
        heard = []

        async def listener() -> None:
            heard.append(cache.revision)

        watcher.add_listener(listener)
        watcher.start()  # from loaded_at + 1, which is compacted

        async def caught_up() -> bool:
            return cache.topic_list() == [spec] and bool(heard)

        await eventually(caught_up, what="snapshot reload after compaction")
        assert cache.revision > loaded_at
    finally:
        await watcher.close()
        await session.close()
