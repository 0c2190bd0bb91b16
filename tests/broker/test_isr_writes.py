"""ISR writes a leader asks of an unreachable coordinator are retried after a pause."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from comet.broker.partition import Partition
from comet.broker.replica_manager import ReplicaManager
from comet.cluster import CoordinatorError, PartitionState
from comet.storage import LogConfig, PartitionLog

BACKOFF_S = 0.3


class UnreachableCoordinator:
    """Every partition state write fails, as when etcd cannot be reached."""

    def __init__(self) -> None:
        self.writes = 0

    async def update_partition_state(self, old: PartitionState, new: PartitionState) -> None:
        self.writes += 1
        raise CoordinatorError("cluster metadata store unavailable")


async def test_follower_fetches_do_not_retry_a_failed_isr_write_at_once(tmp_path: Path) -> None:
    # Found by the fault harness: a leader cut off from etcd tried to add a caught-up
    # follower to the ISR on every one of its fetches, ~90 failed writes a second.
    coordinator = UnreachableCoordinator()
    manager = ReplicaManager(coordinator, "b0", 10.0, lambda _: None)  # type: ignore[arg-type]
    manager.isr_retry_backoff_s = BACKOFF_S
    log = PartitionLog.open(tmp_path / "p", LogConfig())
    partition = Partition("t", 0, log, me="b0", on_isr_change=manager.request_isr_change)
    partition.update_state(PartitionState("t", 0, ("b0", "b1"), "b0", 0, ("b0",)), "b0")
    try:
        started = time.monotonic()
        while time.monotonic() - started < BACKOFF_S * 0.8:  # a caught-up follower fetching
            await partition.replica_fetch("b1", 0, 0, 1024, 0)
            await asyncio.sleep(0.001)
        assert coordinator.writes == 1
        deadline = time.monotonic() + 5
        while coordinator.writes < 2:  # once the pause is over, the change is asked again
            assert time.monotonic() < deadline, "the ISR write was never retried"
            await partition.replica_fetch("b1", 0, 0, 1024, 0)
            await asyncio.sleep(0.01)
    finally:
        await manager.stop()
        await partition.flusher.close()
        log.close()
