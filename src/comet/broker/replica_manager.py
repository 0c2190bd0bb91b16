"""Replication duties of a broker: followers' fetchers and the ISR of the partitions it leads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable

import structlog

from comet.broker.partition import Partition
from comet.broker.replica_fetcher import LeaderLink, ReplicaFetcher
from comet.cluster import Coordinator, PartitionState, StaleStateError

log = structlog.get_logger(__name__)

ISR_RETRY_BACKOFF_S = 0.5  # after a failed ISR write, before the next may be tried


class ReplicaManager:
    """Starts and stops ReplicaFetchers as leadership moves; writes ISR changes (CAS)."""

    def __init__(
        self,
        coordinator: Coordinator,
        me: str,
        lag_time_max_s: float,
        address_of: Callable[[str], str | None],
    ) -> None:
        self.coordinator = coordinator
        self.me = me
        self.lag_time_max_s = lag_time_max_s
        self._address_of = address_of
        self.link: LeaderLink | None = None  # set by the server layer
        self._fetchers: dict[tuple[str, int], ReplicaFetcher] = {}
        self._isr_writes: set[asyncio.Task[None]] = set()
        self.isr_retry_backoff_s = ISR_RETRY_BACKOFF_S

    async def follow(self, partition: Partition, state: PartitionState) -> None:
        """Run a fetcher toward the partition's leader when this broker follows it."""
        key = (partition.topic, partition.index)
        fetcher = self._fetchers.get(key)
        wanted = None
        if state.leader and state.leader != self.me and self.link is not None:
            wanted = (state.leader, state.leader_epoch)
        if fetcher is not None and (fetcher.leader_id, fetcher.leader_epoch) == wanted:
            return
        if fetcher is not None:
            del self._fetchers[key]
            await fetcher.stop()
        if wanted is None:
            return
        address = self._address_of(state.leader) or ""
        if not address:
            return  # the leader's address arrives with the next metadata change
        fetcher = ReplicaFetcher(
            partition, self.me, state.leader, address, state.leader_epoch, self.link
        )
        self._fetchers[key] = fetcher
        fetcher.start()
        log.info(
            "replica.following",
            topic=partition.topic,
            partition=partition.index,
            leader=state.leader,
            leader_epoch=state.leader_epoch,
        )

    def request_isr_change(self, partition: Partition, isr: frozenset[str]) -> None:
        """Write a new ISR for a partition this broker leads (CAS, in the background)."""
        task = asyncio.create_task(self._write_isr(partition, isr))
        self._isr_writes.add(task)
        task.add_done_callback(self._isr_writes.discard)

    async def _write_isr(self, partition: Partition, isr: frozenset[str]) -> None:
        state = partition.state
        try:
            if state is None or state.leader != self.me:
                return
            ordered = tuple(r for r in state.replicas if r in isr)
            new = dataclasses.replace(state, isr=ordered)
            await self.coordinator.update_partition_state(state, new)
            log.info(
                "partition.isr_changed",
                topic=partition.topic,
                partition=partition.index,
                old_isr=list(state.isr),
                new_isr=list(ordered),
            )
        except StaleStateError as exc:
            log.info("partition.isr_change_stale", topic=partition.topic, error=str(exc))
        except Exception as exc:
            log.warning(
                "partition.isr_change_failed",
                topic=partition.topic,
                partition=partition.index,
                error=str(exc),
            )
            # The coordinator is unreachable: every follower fetch would ask again at once
            # (found by the fault harness: ~90 failed writes a second per broker while cut
            # off from etcd). The change stays pending for a while, then may be retried.
            await asyncio.sleep(self.isr_retry_backoff_s)
        finally:
            partition.isr_change_done()

    async def shrink_loop(self, partitions: Callable[[], list[Partition]]) -> None:
        """Every quarter of replica.lag.time.max, drop followers that fell out of sync."""
        lag_max = self.lag_time_max_s
        while True:
            await asyncio.sleep(lag_max / 4)
            now = time.monotonic()
            for partition in partitions():
                partition.shrink_isr(now, lag_max)

    async def stop_topic(self, topic: str) -> None:
        """Stop the fetchers of a deleted topic."""
        for key in [k for k in self._fetchers if k[0] == topic]:
            await self._fetchers.pop(key).stop()

    async def stop(self) -> None:
        """Stop every fetcher and pending ISR write."""
        fetchers, self._fetchers = self._fetchers, {}
        for fetcher in fetchers.values():
            await fetcher.stop()
        for task in list(self._isr_writes):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
