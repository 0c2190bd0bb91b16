"""--peer-advertise-addr: brokers dial each other there, clients keep --advertise-addr.

Every broker's peer address is a fault proxy in front of it (and its client
address another one), so the test sees which traffic goes where, and that
cutting only the peer link of a leader keeps clients able to reach it while
its followers cannot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from comet.aio import CometClient
from comet.errors import NotEnoughReplicasError
from comet.records import encode_batch
from tests.faults.cluster import FaultCluster
from tests.polling import await_for

T = TypeVar("T")
TOPIC = "peers"
LAG_MS = 1500

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[FaultCluster]:
    c = FaultCluster(tmp_path, extra_args=["--replica-lag-time-max-ms", str(LAG_MS)])
    try:
        yield await c.start_all()
    finally:
        await c.close_all()


async def test_brokers_replicate_over_peer_addresses_and_clients_see_only_client_ones(
    cluster: FaultCluster,
) -> None:
    async with CometClient(cluster.client_bootstrap, timeout=5) as client:
        await client.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"})

        async def full_isr() -> str:
            info = (await client.metadata([TOPIC])).topics[TOPIC][0]
            return info.leader if len(info.isr) == 3 else ""

        leader = await await_for(full_isr, 15, "a leader with three in-sync replicas")
        meta = await client.metadata([TOPIC])
        assert {b.id: b.address for b in meta.brokers} == {
            b: cluster.proxy(b, "client").address for b in cluster.brokers
        }
        result = await client.produce_batch(TOPIC, 0, encode_batch([(None, b"v0")]), acks="all")
        assert result.base_offset == 0
        # followers fetched from the leader's peer proxy, not its client proxy
        assert cluster.proxy(leader, "peer").stats.connections >= 1
        assert cluster.proxy(leader, "peer").stats.bytes["down"] > 0

        cluster.proxy(leader, "peer").cut()

        async def refused() -> bool:
            try:
                await client.produce_batch(
                    TOPIC, 0, encode_batch([(None, b"cut")]), acks="all", timeout_ms=500
                )
            except NotEnoughReplicasError:
                return True  # the leader is reachable by clients, but alone in its ISR
            return False

        await await_for(refused, 20, "acks=all refused while followers cannot reach the leader")
        cluster.proxy(leader, "peer").heal()

        async def accepted() -> bool:
            r = await client.produce_batch(
                TOPIC, 0, encode_batch([(None, b"healed")]), acks="all", timeout_ms=2000
            )
            return r.base_offset >= 1

        await await_for(accepted, 20, "acks=all accepted again once the peer link heals")
