"""The client dials a broker again soon after it becomes reachable."""

from __future__ import annotations

import asyncio
import time

from comet import aio
from comet.cli.local_broker import LocalBroker
from comet.errors import CometError
from tests.faults.proxy import FaultProxy

CUT_S = 6.0
RECOVERY_BOUND_S = 2.0


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
        assert await call()
        proxy.cut()
        cut_until = time.monotonic() + CUT_S
        while time.monotonic() < cut_until:  # a producer retrying against a cut broker
            assert not await call()
            await asyncio.sleep(0.05)
        proxy.heal()
        healed = time.monotonic()
        while not await call():
            assert time.monotonic() - healed < RECOVERY_BOUND_S + 3, "never reconnected"
            await asyncio.sleep(0.05)
        assert time.monotonic() - healed < RECOVERY_BOUND_S
    finally:
        await client.close()
        await proxy.close()
