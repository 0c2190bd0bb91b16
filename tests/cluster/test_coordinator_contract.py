"""The Coordinator contract, run against every implementation.

`local`: LocalCoordinator on a temporary directory. `etcd`: EtcdCoordinator
on a real etcd (one per session, a fresh key prefix per test). A "restart"
is a new coordinator on the same directory or prefix after closing the old.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from comet.cluster import (
    BrokerRecord,
    Coordinator,
    LocalCoordinator,
    StaleStateError,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)
from comet.cluster.etcd import EtcdCoordinator

from .conftest import TEST_LEASE_TTL_S

ME = BrokerRecord("b1", "127.0.0.1:6174")

Start = Callable[[], Awaitable[Coordinator]]


@pytest.fixture(params=["local", "etcd"])
async def start(
    request: pytest.FixtureRequest, tmp_path: Path, etcd_prefix: str
) -> AsyncIterator[Start]:
    """Start a coordinator of the parametrized kind; each call is a restart on the same state."""
    running: list[Coordinator] = []

    def make() -> Coordinator:
        if request.param == "local":
            return LocalCoordinator(tmp_path / "meta")
        etcd = request.getfixturevalue("etcd_server")
        return EtcdCoordinator([etcd.endpoint], prefix=etcd_prefix, lease_ttl_s=TEST_LEASE_TTL_S)

    async def started() -> Coordinator:
        for old in running:
            await old.close()
        running.clear()
        coordinator = make()
        await coordinator.start(ME)
        running.append(coordinator)
        return coordinator

    yield started
    for coordinator in running:
        await coordinator.close()


# --- topics -----------------------------------------------------------------


async def test_create_list_get_delete(start: Start) -> None:
    c = await start()
    assert await c.list_brokers() == [ME]
    await c.create_topic(TopicSpec("b-topic", 2, 1, {"retention.ms": "1000"}))
    await c.create_topic(TopicSpec("a-topic", 1, 1))
    assert [t.name for t in await c.list_topics()] == ["a-topic", "b-topic"]
    assert await c.get_topic("b-topic") == TopicSpec("b-topic", 2, 1, {"retention.ms": "1000"})
    await c.delete_topic("a-topic")
    assert [t.name for t in await c.list_topics()] == ["b-topic"]
    assert await c.get_topic("a-topic") is None


async def test_created_states_are_the_stored_states(start: Start) -> None:
    c = await start()
    states = await c.create_topic(TopicSpec("t", 3, 1))
    assert [s.partition for s in states] == [0, 1, 2]
    for state in states:
        assert (state.topic, state.leader, state.leader_epoch) == ("t", "b1", 0)
        assert state.replicas == state.isr == ("b1",)
        assert state.online
    assert await c.partition_states("t") == states


async def test_duplicate_and_missing_topics(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("t", 1, 1))
    with pytest.raises(TopicExistsError, match="'t'"):
        await c.create_topic(TopicSpec("t", 2, 1))
    assert (await c.get_topic("t")) == TopicSpec("t", 1, 1)  # the failed create changed nothing
    await c.delete_topic("t")
    with pytest.raises(TopicNotFoundError, match="'t'"):
        await c.delete_topic("t")
    with pytest.raises(TopicNotFoundError):
        await c.partition_states("t")
    assert await c.get_topic("t") is None


async def test_a_deleted_topic_can_be_created_again(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("t", 3, 1))
    await c.delete_topic("t")
    await c.create_topic(TopicSpec("t", 1, 1))
    assert len(await c.partition_states("t")) == 1


# --- partition states ---------------------------------------------------------


async def test_partition_state_compare_and_set(start: Start) -> None:
    c = await start()
    [state] = await c.create_topic(TopicSpec("t", 1, 1))
    # (a change a controller leaves alone: its leader stays live)
    shrunk = dataclasses.replace(state, leader_epoch=state.leader_epoch + 1, isr=())
    stored = await c.update_partition_state(state, shrunk)
    assert (stored.leader, stored.leader_epoch, stored.isr) == ("b1", 1, ())
    assert stored.version != state.version
    assert (await c.partition_states("t"))[0] == stored
    with pytest.raises(StaleStateError, match="version"):
        await c.update_partition_state(state, shrunk)  # based on the old version
    grown = dataclasses.replace(stored, leader_epoch=2, isr=("b1",))
    assert (await c.update_partition_state(stored, grown)).leader_epoch == 2


async def test_updating_a_missing_partition_is_not_found(start: Start) -> None:
    c = await start()
    [state] = await c.create_topic(TopicSpec("t", 1, 1))
    await c.delete_topic("t")
    with pytest.raises(TopicNotFoundError):
        await c.update_partition_state(state, dataclasses.replace(state, leader_epoch=1))


# --- listeners ------------------------------------------------------------------


async def test_listeners_have_run_when_a_change_returns(start: Start) -> None:
    c = await start()
    seen: list[list[str]] = []

    async def listener() -> None:
        seen.append([t.name for t in await c.list_topics()])

    c.add_listener(listener)
    await c.create_topic(TopicSpec("a", 1, 1))
    assert seen[-1] == ["a"]
    await c.create_topic(TopicSpec("b", 1, 1))
    assert seen[-1] == ["a", "b"]
    [state] = await c.partition_states("b")
    calls = len(seen)
    await c.update_partition_state(state, dataclasses.replace(state, leader_epoch=1))
    assert len(seen) > calls
    await c.delete_topic("a")
    assert seen[-1] == ["b"]


# --- committed offsets ---------------------------------------------------------


async def test_offsets_commit_fetch_list_delete(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("orders", 3, 1))
    await c.commit_offsets("g1", {("orders", 0): 5, ("orders", 2): 9})
    await c.commit_offsets("g1", {("orders", 0): 7})
    await c.commit_offsets("g2", {("orders", 1): 1})
    await c.commit_offsets("g2", {})
    assert await c.fetch_offsets("g1") == {("orders", 0): 7, ("orders", 2): 9}
    assert await c.fetch_offsets("g2") == {("orders", 1): 1}
    assert await c.fetch_offsets("nobody") == {}
    assert await c.list_groups() == ["g1", "g2"]
    await c.delete_group_offsets("g1")
    await c.delete_group_offsets("never-had-any")
    assert await c.list_groups() == ["g2"]
    assert await c.fetch_offsets("g1") == {}


async def test_fetched_offsets_are_the_callers_copy(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("t", 1, 1))
    await c.commit_offsets("g", {("t", 0): 1})
    mine = await c.fetch_offsets("g")
    mine[("t", 0)] = 99
    assert await c.fetch_offsets("g") == {("t", 0): 1}


async def test_a_failed_commit_stores_nothing(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("t", 2, 1))
    with pytest.raises(TopicNotFoundError, match="'nope'"):
        await c.commit_offsets("g", {("t", 0): 1, ("nope", 0): 1})
    with pytest.raises(TopicNotFoundError, match=r"0\.\.1, not 2"):
        await c.commit_offsets("g", {("t", 0): 1, ("t", 2): 1})
    with pytest.raises(ValueError, match=">= 0"):
        await c.commit_offsets("g", {("t", 0): -1})
    assert await c.fetch_offsets("g") == {}
    assert await c.list_groups() == []


async def test_deleting_a_topic_drops_its_offsets(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("gone", 2, 1))
    await c.create_topic(TopicSpec("kept", 1, 1))
    await c.commit_offsets("g", {("gone", 0): 3, ("gone", 1): 4, ("kept", 0): 5})
    await c.commit_offsets("only-gone", {("gone", 0): 1})
    await c.delete_topic("gone")
    assert await c.fetch_offsets("g") == {("kept", 0): 5}
    assert await c.list_groups() == ["g"]
    await c.create_topic(TopicSpec("gone", 2, 1))
    assert await c.fetch_offsets("g") == {("kept", 0): 5}
    assert await c.fetch_offsets("only-gone") == {}


async def test_group_names_are_not_prefixes_of_each_other(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("t", 1, 1))
    await c.commit_offsets("g", {("t", 0): 1})
    await c.commit_offsets("g.x", {("t", 0): 2})
    assert await c.fetch_offsets("g") == {("t", 0): 1}
    await c.delete_group_offsets("g")
    assert await c.fetch_offsets("g.x") == {("t", 0): 2}


# --- producer ids and restarts -------------------------------------------------


async def test_producer_ids_are_unique_also_concurrently(start: Start) -> None:
    c = await start()
    ids = await asyncio.gather(*(c.allocate_producer_id() for _ in range(20)))
    assert len(set(ids)) == 20


async def test_restart_keeps_topics_offsets_and_producer_ids(start: Start) -> None:
    c = await start()
    await c.create_topic(TopicSpec("orders", 3, 1, {"retention.ms": "1000"}))
    await c.commit_offsets("g", {("orders", 1): 42})
    first = {await c.allocate_producer_id() for _ in range(3)}
    cluster_id = c.cluster_id  # type: ignore[attr-defined]

    again = await start()
    assert again.cluster_id == cluster_id  # type: ignore[attr-defined]
    assert await again.list_topics() == [TopicSpec("orders", 3, 1, {"retention.ms": "1000"})]
    assert len(await again.partition_states("orders")) == 3
    assert await again.fetch_offsets("g") == {("orders", 1): 42}
    assert await again.allocate_producer_id() not in first
    assert await again.list_brokers() == [ME]
