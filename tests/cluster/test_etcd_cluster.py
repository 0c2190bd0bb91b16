"""Several EtcdCoordinators on one real etcd: visibility, controller, expiry, failover."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import aetcd
import pytest
import structlog

from comet.cli.local_broker import free_port
from comet.cli.local_etcd import EtcdProcess
from comet.cluster import (
    BrokerRecord,
    NotEnoughBrokersError,
    PartitionState,
    TopicSpec,
)
from comet.cluster.etcd import BrokerIdConflictError, EtcdCoordinator, EtcdUnavailableError
from comet.cluster.etcd.keys import KeyLayout

from .conftest import CoordinatorProcess, StartCoordinator, eventually


async def test_a_topic_created_on_one_broker_is_seen_by_the_others_within_a_second(
    coordinators: StartCoordinator,
) -> None:
    b1, b2, b3 = [await coordinators(f"b{i}") for i in (1, 2, 3)]

    async def everyone_sees(name: str, present: bool) -> bool:
        return all([(await c.get_topic(name) is not None) == present for c in (b1, b2, b3)])

    await b1.create_topic(TopicSpec("orders", 6, 3))
    await eventually(lambda: everyone_sees("orders", True), timeout_s=1.0)
    assert await b3.partition_states("orders") == await b1.partition_states("orders")
    await b2.delete_topic("orders")
    await eventually(lambda: everyone_sees("orders", False), timeout_s=1.0)


async def test_exactly_one_controller_and_a_new_one_when_it_closes(
    coordinators: StartCoordinator,
) -> None:
    members = {f"b{i}": await coordinators(f"b{i}") for i in (1, 2, 3)}

    async def agreed(exclude: str = "") -> bool:
        views = {await c.controller_id() for b, c in members.items() if b != exclude}
        holders = [b for b, c in members.items() if c.is_controller and b != exclude]
        return len(views) == 1 and None not in views and holders == list(views)

    await eventually(agreed)
    first = await members["b1"].controller_id()
    assert first is not None
    await members[first].close()
    await eventually(lambda: agreed(exclude=first), timeout_s=2.0)
    survivor = next(c for b, c in members.items() if b != first)
    assert await survivor.controller_id() != first
    assert first not in [b.id for b in await survivor.list_brokers()]


async def test_a_killed_broker_expires_and_the_controller_moves_or_offlines_its_partitions(
    coordinators: StartCoordinator, spawn_coordinator: Callable[[str], CoordinatorProcess]
) -> None:
    b1 = await coordinators("b1")
    b2 = await coordinators("b2")
    victim = spawn_coordinator("b3")
    await eventually(lambda: _ids(b1, {"b1", "b2", "b3"}))
    await b1.create_topic(TopicSpec("rf2", 6, 2))
    await b1.create_topic(TopicSpec("rf1", 3, 1))
    before = {(s.topic, s.partition): s for s in await _states(b1)}
    led_by_victim = {k: s for k, s in before.items() if s.leader == "b3"}
    assert {t for t, _ in led_by_victim} == {"rf1", "rf2"}
    await eventually(lambda: _same_view(b1, b2))

    victim.kill()
    await eventually(lambda: _ids(b2, {"b1", "b2"}), timeout_s=6.0)

    async def handled() -> bool:
        now = {(s.topic, s.partition): s for s in await _states(b2)}
        return all(now[k].leader != "b3" for k in led_by_victim)

    await eventually(handled, timeout_s=3.0)
    after = {(s.topic, s.partition): s for s in await _states(b1)}
    for key, old in before.items():
        new = after[key]
        assert new.replicas == old.replicas
        if key not in led_by_victim:
            assert new == old
        elif key[0] == "rf2":  # the other replica is live and in the ISR
            assert new.leader == next(r for r in old.replicas if r != "b3")
            assert new.leader_epoch == old.leader_epoch + 1
            assert new.isr == tuple(r for r in old.isr if r != "b3")  # the dead leave the ISR
        else:  # RF 1: nobody else to lead; the ISR keeps who may lead again
            assert new.isr == old.isr
            assert (new.leader, new.leader_epoch) == ("", old.leader_epoch + 1)
            assert not new.online

    spawn_coordinator("b3")  # it comes back

    async def back_online() -> bool:
        now = {(s.topic, s.partition): s for s in await _states(b2)}
        return all(s.online for s in now.values())

    await eventually(back_online, timeout_s=3.0)
    final = {(s.topic, s.partition): s for s in await _states(b1)}
    for key, old in led_by_victim.items():
        if key[0] == "rf1":
            assert (final[key].leader, final[key].leader_epoch) == ("b3", old.leader_epoch + 2)
        else:  # no preferred-leader election: the new leader keeps it
            assert final[key] == after[key]


async def test_killing_the_controller_elects_a_new_one_after_its_lease_expires(
    coordinators: StartCoordinator, spawn_coordinator: Callable[[str], CoordinatorProcess]
) -> None:
    controller = spawn_coordinator("b0")  # first, so it wins the election
    b1 = await coordinators("b1")
    b2 = await coordinators("b2")
    await eventually(lambda: _controller_is(b1, "b0"))
    controller.kill()
    await eventually(lambda: _controller_is(b2, "b1", "b2"), timeout_s=6.0)
    assert await b1.controller_id() == await b2.controller_id()


async def test_a_deposed_controller_cannot_write(
    coordinators: StartCoordinator, etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    b1 = await coordinators("b1")
    b2 = await coordinators("b2")
    await eventually(lambda: _controller_is(b1, "b1"))
    [state] = await b1.create_topic(TopicSpec("t", 1, 2))
    controller = b1._controller
    assert controller is not None
    old_term = controller._term
    async with aetcd.Client("127.0.0.1", etcd_server.client_port) as admin:
        await admin.delete(KeyLayout(etcd_prefix).controller)  # b1 is deposed

    async def new_term() -> bool:  # whoever won, the key was created again
        holder = b2._cache.controller
        return holder is not None and holder.term != old_term

    await eventually(new_term)
    # b1's controller acts on the term it had, as a slow deposed controller would
    controller._term = old_term
    offline = PartitionState("t", 0, state.replicas, "", state.leader_epoch + 1, state.isr)
    assert not await controller._write(state, offline)
    assert (await b2.partition_states("t"))[0] == state


async def test_a_topic_needs_as_many_live_brokers_as_replicas(
    coordinators: StartCoordinator,
) -> None:
    b1 = await coordinators("b1")
    with pytest.raises(NotEnoughBrokersError, match="needs 2 replicas but only 1"):
        await b1.create_topic(TopicSpec("t", 1, 2))
    assert await b1.get_topic("t") is None
    await coordinators("b2")  # registered a moment ago: b1's cache may not show it yet
    [state] = await b1.create_topic(TopicSpec("t", 1, 2))
    assert sorted(state.replicas) == ["b1", "b2"]


async def test_a_broker_that_joins_later_takes_replicas_of_new_topics(
    coordinators: StartCoordinator,
) -> None:
    b1 = await coordinators("b1")
    await coordinators("b2")
    await eventually(lambda: _ids(b1, {"b1", "b2"}))
    await b1.create_topic(TopicSpec("old", 8, 2))
    await coordinators("b3")
    await eventually(lambda: _ids(b1, {"b1", "b2", "b3"}))
    states = await b1.create_topic(TopicSpec("new", 3, 2))
    assert states[0].leader == "b3"
    assert sum("b3" in s.replicas for s in states) == 2


async def test_a_second_process_with_the_same_broker_id_is_refused(
    coordinators: StartCoordinator,
) -> None:
    await coordinators("b1")
    started = time.monotonic()
    with pytest.raises(BrokerIdConflictError, match="broker id 'b1' is registered"):
        await coordinators("b1", registration_timeout_s=0.5)
    assert time.monotonic() - started < 3


async def test_a_restarted_broker_waits_for_its_killed_predecessors_lease(
    coordinators: StartCoordinator, spawn_coordinator: Callable[[str], CoordinatorProcess]
) -> None:
    spawn_coordinator("b1").kill()  # kill -9: its registration outlives it by one TTL
    b1 = await coordinators("b1")  # waits for the old lease to expire, then registers
    assert [b.id for b in await b1.list_brokers()] == ["b1"]


async def test_listener_failures_are_logged_not_raised(coordinators: StartCoordinator) -> None:
    b1 = await coordinators("b1")
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise RuntimeError("listener bug")

    b1.add_listener(broken)
    with structlog.testing.capture_logs() as logs:
        await b1.create_topic(TopicSpec("t", 1, 1))
        await b1.create_topic(TopicSpec("u", 1, 1))
    assert len(calls) >= 2
    assert any(e["event"] == "coordinator.listener_failed" for e in logs)


async def test_an_unreachable_etcd_fails_start_fast_naming_the_endpoint() -> None:
    port = free_port()
    coordinator = EtcdCoordinator([f"127.0.0.1:{port}"], connect_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailableError, match=f"127.0.0.1:{port}"):
        await coordinator.start(BrokerRecord("b1", "127.0.0.1:1"))
    assert time.monotonic() - started < 3
    await coordinator.close()


async def test_an_etcd_that_accepts_but_never_answers_fails_start_after_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        coordinator = EtcdCoordinator([f"127.0.0.1:{port}"], connect_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(EtcdUnavailableError, match="within 1 s"):
            await coordinator.start(BrokerRecord("b1", "127.0.0.1:1"))
        assert time.monotonic() - started < 2.5
    await coordinator.close()


async def test_a_second_endpoint_is_used_when_the_first_is_dead(
    coordinators: StartCoordinator, etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    b1 = await coordinators("b1")
    b2 = EtcdCoordinator([dead, etcd_server.endpoint], prefix=etcd_prefix, lease_ttl_s=2)
    await b2.start(BrokerRecord("b2", "127.0.0.1:2"))
    try:
        await b2.create_topic(TopicSpec("t", 2, 2))
        await eventually(lambda: _has_topic(b1, "t"))
    finally:
        await b2.close()


# --- helpers --------------------------------------------------------------------


async def _ids(c: EtcdCoordinator, expected: set[str]) -> bool:
    return {b.id for b in await c.list_brokers()} == expected


async def _same_view(a: EtcdCoordinator, b: EtcdCoordinator) -> bool:
    return (await a.list_brokers(), await _states(a)) == (await b.list_brokers(), await _states(b))


async def _controller_is(c: EtcdCoordinator, *candidates: str) -> bool:
    return await c.controller_id() in candidates


async def _has_topic(c: EtcdCoordinator, name: str) -> bool:
    return await c.get_topic(name) is not None


async def _states(c: EtcdCoordinator) -> list[PartitionState]:
    out = []
    for spec in await c.list_topics():
        out.extend(await c.partition_states(spec.name))
    return out
