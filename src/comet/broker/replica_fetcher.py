"""The follower side of replication: pull one partition's batches from its leader.

On start (a new leader or epoch) the follower first asks the leader where
the follower's latest leader epoch ends on the leader, and truncates its
own log there if it is longer: batches a deposed leader wrote in an epoch
the new leader never had are dropped. Then it fetches from its log end
offset in a loop; the offset it asks for tells the leader how far it has
the log. Batches are appended as stored on the leader (offsets and epochs
kept) and, under flush policy "batch", fsynced before the next fetch, so
the leader counts only durable copies toward its high watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

import structlog

from comet.records import InvalidBatchError, validate_batches
from comet.storage import StorageError
from comet.storage.leader_epoch import NO_EPOCH

if TYPE_CHECKING:
    from comet.broker.partition import Partition

log = structlog.get_logger(__name__)

FETCH_MAX_BYTES = 4 * 1024 * 1024
FETCH_MAX_WAIT_MS = 500
BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


class LeaderLink(Protocol):
    """Calls a follower makes to its leader (the server layer provides them)."""

    async def replica_fetch(
        self,
        address: str,
        topic: str,
        partition: int,
        offset: int,
        replica_id: str,
        leader_epoch: int,
        max_bytes: int,
        max_wait_ms: int,
    ) -> tuple[bytes, int]:
        """(stored batches from `offset`, the leader's high watermark)."""
        ...

    async def offset_for_leader_epoch(
        self,
        address: str,
        topic: str,
        partition: int,
        leader_epoch: int,
        current_leader_epoch: int,
        replica_id: str,
    ) -> tuple[int, int]:
        """(largest epoch <= leader_epoch on the leader, where it ends there)."""
        ...


class ReplicaFetcher:
    """One task per followed partition; stopped and replaced when leadership changes."""

    def __init__(
        self,
        partition: Partition,
        me: str,
        leader_id: str,
        leader_address: str,
        leader_epoch: int,
        link: LeaderLink,
    ) -> None:
        self.partition = partition
        self.me = me
        self.leader_id = leader_id
        self.leader_address = leader_address
        self.leader_epoch = leader_epoch
        self.link = link
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin fetching in the background."""
        name = f"replica-fetch-{self.partition.topic}-{self.partition.index}"
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Stop fetching; waits for an append in progress to finish."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = BACKOFF_S
        truncated = False
        p = self.partition
        while True:
            try:
                if not truncated:
                    await self._truncate_divergent_tail()
                    truncated = True
                records, leader_hw = await self.link.replica_fetch(
                    self.leader_address,
                    p.topic,
                    p.index,
                    p.log.log_end_offset,
                    self.me,
                    self.leader_epoch,
                    FETCH_MAX_BYTES,
                    FETCH_MAX_WAIT_MS,
                )
                if records:
                    await self._append(records)
                p.set_follower_high_watermark(leader_hw)
                backoff = BACKOFF_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is retried; leadership changes restart us
                log.warning(
                    "replica.fetch_failed",
                    topic=p.topic,
                    partition=p.index,
                    leader=self.leader_id,
                    error=str(exc),
                )
                if "OUT_OF_RANGE" in str(exc) or isinstance(exc, InvalidBatchError):
                    truncated = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _append(self, records: bytes) -> None:
        p = self.partition
        headers = validate_batches(records, producer=False)
        start = p.log.log_end_offset
        skip = 0
        for header in headers:  # the leader sends whole batches: drop any we already have
            if header.next_offset <= start:
                skip += header.size
        if skip:
            records = records[skip:]
            headers = [h for h in headers if h.next_offset > start]
        if not headers:
            return
        producers = await p.producer_state()  # rebuilt first after a truncation; no await after
        try:
            info = p.log.append_stamped(records, headers)
        except StorageError as exc:
            log.error("replica.append_failed", topic=p.topic, partition=p.index, error=str(exc))
            raise
        producers.record(headers, info.base_offset)  # a new leader knows every producer
        if p.log.config.flush_policy == "batch":
            await p.flusher.wait_durable(info.last_offset + 1)

    async def _truncate_divergent_tail(self) -> None:
        p = self.partition
        epoch = p.log.leader_epochs.latest_epoch
        log_end = p.log.log_end_offset
        if epoch == NO_EPOCH or log_end == p.log.log_start_offset:
            return
        leader_epoch, end_offset = await self.link.offset_for_leader_epoch(
            self.leader_address, p.topic, p.index, epoch, self.leader_epoch, self.me
        )
        # The leader never had our latest epoch or anything before it: keep only
        # what was committed (below our high watermark).
        target = p.high_watermark if leader_epoch == NO_EPOCH else end_offset
        if 0 <= target < log_end:
            await asyncio.to_thread(p.log.truncate_to, target)
            log.info(
                "replica.truncated",
                topic=p.topic,
                partition=p.index,
                epoch=epoch,
                leader_epoch=leader_epoch,
                from_offset=log_end,
                to_offset=p.log.log_end_offset,
            )
