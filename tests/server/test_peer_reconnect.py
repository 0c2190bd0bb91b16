"""Broker-to-broker channels dial a peer again soon after it becomes reachable."""

from __future__ import annotations

import grpc

from comet.cli.local_broker import LocalBroker
from comet.server.peers import PeerClients
from comet.v1 import broker_pb2 as pb
from tests.faults.proxy import FaultProxy
from tests.faults.reconnect import assert_reconnects_after_cut


async def test_a_peer_unreachable_for_seconds_is_reached_within_two_seconds_of_healing(
    broker: LocalBroker,
) -> None:
    # Found by the fault harness: after a 5 s partition between brokers healed, followers
    # went on failing to fetch for up to 12 s (gRPC's reconnect backoff had grown), and
    # acks=all waited for them.
    proxy = await FaultProxy("peer", broker.address).start()
    peers = PeerClients()
    stub = peers.stub(proxy.address)

    async def call() -> bool:
        try:
            await stub.GetMetadata(pb.GetMetadataRequest(), timeout=0.5)
        except grpc.RpcError:
            return False
        return True

    try:
        await assert_reconnects_after_cut(proxy, call, "a fetcher")
    finally:
        await peers.close()
        await proxy.close()
