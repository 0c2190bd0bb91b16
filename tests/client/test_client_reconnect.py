"""The client dials a broker again soon after it becomes reachable."""

from __future__ import annotations

from comet import aio
from comet.cli.local_broker import LocalBroker
from comet.errors import CometError
from tests.faults.proxy import FaultProxy
from tests.faults.reconnect import assert_reconnects_after_cut


async def test_a_broker_unreachable_for_seconds_is_reached_within_two_seconds_of_healing(
    broker: LocalBroker,
) -> None:
    # Found by the fault harness: after a broker's client link healed, producers went on
    # failing to connect for up to 20 s (gRPC's reconnect backoff had grown while they
    # retried), and records ran out of delivery time.
    proxy = await FaultProxy("client", broker.address).start()
    client = aio.CometClient(proxy.address, timeout=0.5)

    async def call() -> bool:
        try:
            await client.metadata()
        except CometError:
            return False
        return True

    try:
        await assert_reconnects_after_cut(proxy, call, "a producer")
    finally:
        await client.close()
        await proxy.close()
