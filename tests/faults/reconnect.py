"""A link cut for seconds and healed: how soon a caller gets through again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tests.faults.proxy import FaultProxy

CUT_S = 6.0
RECOVERY_BOUND_S = 2.0


async def assert_reconnects_after_cut(
    proxy: FaultProxy, call: Callable[[], Awaitable[bool]], what: str
) -> None:
    """Cut `proxy` for CUT_S while `what` keeps calling, heal it, and require a success
    within RECOVERY_BOUND_S (gRPC's reconnect backoff grows while the link is down)."""
    assert await call()
    proxy.cut()
    cut_until = time.monotonic() + CUT_S
    while time.monotonic() < cut_until:  # `what` retrying against the cut link
        assert not await call()
        await asyncio.sleep(0.05)
    proxy.heal()
    healed = time.monotonic()
    while not await call():
        assert time.monotonic() - healed < RECOVERY_BOUND_S + 3, f"{what} never reconnected"
        await asyncio.sleep(0.05)
    assert time.monotonic() - healed < RECOVERY_BOUND_S, f"{what} took too long to reconnect"
