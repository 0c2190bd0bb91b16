"""Surviving etcd: restarts, outages longer than the lease, lost leases."""

from __future__ import annotations

import asyncio
import time

import aetcd
import pytest

from comet.cli.local_etcd import EtcdProcess
from comet.cluster import TopicExistsError, TopicSpec
from comet.cluster.etcd import EtcdCoordinator, EtcdUnavailableError
from comet.cluster.etcd.keys import KeyLayout

from .conftest import TEST_LEASE_TTL_S, StartCoordinator, eventually


async def test_brokers_keep_serving_and_stay_registered_across_an_etcd_restart(
    own_etcd: EtcdProcess, coordinators: StartCoordinator, etcd_prefix: str
) -> None:
    b1 = await coordinators("b1", etcd=own_etcd, request_timeout_s=1.0)
    b2 = await coordinators("b2", etcd=own_etcd, request_timeout_s=1.0)
    await b1.create_topic(TopicSpec("before", 2, 2))
    await eventually(lambda: _has_topic(b2, "before"))

    own_etcd.stop()
    # down for longer than the lease TTL: the scenario, not a synchronisation
    down_until = time.monotonic() + TEST_LEASE_TTL_S + 1
    with pytest.raises(EtcdUnavailableError, match="retry"):
        await b1.create_topic(TopicSpec("during", 1, 1))
    for c in (b1, b2):  # reads come from the cache meanwhile
        assert [t.name for t in await c.list_topics()] == ["before"]
        assert [b.id for b in await c.list_brokers()] == ["b1", "b2"]
    await asyncio.sleep(max(0.0, down_until - time.monotonic()))
    restarted = time.monotonic()
    own_etcd.start()

    await eventually(lambda: _create(b2, "after", 2), timeout_s=10.0, what="a write after restart")
    took = await eventually(lambda: _has_topic(b1, "after"), timeout_s=5.0)
    print(f"\netcd back to a write seen by both: {(time.monotonic() - restarted) * 1000:.0f} ms")
    assert took < 5.0
    for c in (b1, b2):
        assert [b.id for b in await c.list_brokers()] == ["b1", "b2"]
    assert await _registered_in_etcd(own_etcd, etcd_prefix, "b1", "b2")
    await eventually(lambda: _one_controller(b1, b2))


async def test_a_watch_resumes_without_missing_changes_made_while_it_was_away(
    own_etcd: EtcdProcess, coordinators: StartCoordinator
) -> None:
    b1 = await coordinators("b1", etcd=own_etcd)
    b2 = await coordinators("b2", etcd=own_etcd)
    seen_by_b2: list[list[str]] = []

    async def listener() -> None:
        seen_by_b2.append([t.name for t in await b2.list_topics()])

    b2.add_listener(listener)
    own_etcd.restart()
    # b1 writes as soon as it can; b2 may still be reconnecting
    for name in ("x", "y", "z"):
        await eventually(lambda n=name: _create(b1, n), timeout_s=10.0)
    await b1.delete_topic("y")
    await eventually(lambda: _topic_names(b2, ["x", "z"]), timeout_s=5.0)
    assert seen_by_b2[-1] == ["x", "z"]


async def test_a_lost_lease_is_replaced_and_the_broker_registers_again(
    coordinators: StartCoordinator, etcd_server: EtcdProcess, etcd_prefix: str
) -> None:
    b1 = await coordinators("b1")
    b2 = await coordinators("b2")
    await eventually(lambda: _one_controller(b1, b2))
    key = KeyLayout(etcd_prefix).broker("b1")
    async with aetcd.Client("127.0.0.1", etcd_server.client_port) as admin:
        lost = (await admin.get(key)).lease
        await admin.revoke_lease(lost)  # as if it expired: b1's keys are deleted at once

        async def registered_again() -> bool:
            found = await admin.get(key)
            return found is not None and found.lease != lost

        took = await eventually(registered_again, timeout_s=5.0)
    print(f"\nlost lease to registered again: {took * 1000:.0f} ms")
    await eventually(lambda: _ids(b2, ["b1", "b2"]))
    await eventually(lambda: _one_controller(b1, b2))
    await b1.create_topic(TopicSpec("t", 2, 2))  # b1 is a full member again
    await eventually(lambda: _has_topic(b2, "t"))


# --- helpers ----------------------------------------------------------------------


async def _has_topic(c: EtcdCoordinator, name: str) -> bool:
    return await c.get_topic(name) is not None


async def _topic_names(c: EtcdCoordinator, names: list[str]) -> bool:
    return [t.name for t in await c.list_topics()] == names


async def _ids(c: EtcdCoordinator, ids: list[str]) -> bool:
    return [b.id for b in await c.list_brokers()] == ids


async def _create(c: EtcdCoordinator, name: str, replication_factor: int = 1) -> bool:
    """One attempt; an unavailable etcd may still have done it, so a retry may find it done."""
    try:
        await c.create_topic(TopicSpec(name, 1, replication_factor))
    except EtcdUnavailableError:
        return False
    except TopicExistsError:
        pass
    return True


async def _one_controller(*members: EtcdCoordinator) -> bool:
    views = {await c.controller_id() for c in members}
    return len(views) == 1 and None not in views and sum(c.is_controller for c in members) == 1


async def _registered_in_etcd(etcd: EtcdProcess, prefix: str, *ids: str) -> bool:
    layout = KeyLayout(prefix)
    async with aetcd.Client("127.0.0.1", etcd.client_port) as admin:
        return all([await admin.get(layout.broker(i)) is not None for i in ids])
