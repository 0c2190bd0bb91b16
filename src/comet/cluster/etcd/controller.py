"""The controller: one broker, elected through etcd, that moves leadership off dead brokers.

Election: every broker runs `Controller`. While the cached ``controller``
key is absent and this broker is registered, it campaigns: a transaction
that creates the key (value: its broker id, bound to its lease) only if
``create_revision == 0``. Exactly one campaign wins; the key's create
revision is the winner's *term*. The key disappears when its holder's
lease ends (close() revokes it; a crashed broker's lease expires after its
TTL), and every broker sees that through its watch and campaigns again.

Fencing: every write of the controller is a transaction that compares the
partition key's mod revision with the version it decided on AND the
controller key's create revision with its term. A deposed controller
(whose key expired, even if it has not noticed yet) cannot write; a
decision taken on a stale cache fails and is taken again after the cache
catches up. There are no blind writes.

Duties (level-triggered: after becoming controller and after every change
of the cache it re-examines every partition, so a new controller finishes
whatever its predecessor left half done), for a partition whose leader is
not a live broker, as decided by `next_leadership`:

- if a replica that is live AND in the ISR exists, the first such in
  replica order becomes leader, leader_epoch + 1, and the ISR keeps only
  its live members (controller.leader_moved, or controller.partition_online
  when the partition had no leader);
- otherwise the partition goes offline: leader "", leader_epoch + 1, ISR
  unchanged (controller.partition_offline); it comes back online, epoch + 1
  again, as soon as one of its ISR replicas is live. Unclean election (a
  leader from outside the ISR) only for a topic with
  unclean.leader.election.enable=1.

Otherwise the ISR is the partition leaders' job (they shrink and expand it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Set

import structlog

from comet.cluster.coordinator import CoordinatorError, PartitionState
from comet.cluster.etcd import ops
from comet.cluster.etcd.errors import EtcdUnavailableError
from comet.cluster.etcd.keys import KeyLayout, encode_partition
from comet.cluster.etcd.session import Backoff, EtcdSession
from comet.cluster.etcd.watcher import MetadataWatcher

log = structlog.get_logger(__name__)

UNCLEAN_KEY = "unclean.leader.election.enable"


def next_leadership(
    state: PartitionState, alive: Set[str], *, unclean: bool = False
) -> PartitionState | None:
    """The state the controller writes for `state` given the live brokers; None: leave it.

    With `unclean` (the topic's unclean.leader.election.enable=1) a live
    replica outside the ISR may lead when no ISR replica is live: the
    partition comes back at once, at the price of losing what only the ISR
    had.
    """
    if state.leader and state.leader in alive:
        return None
    candidates = [r for r in state.replicas if r in state.isr and r in alive]
    if not candidates and unclean:
        candidates = [r for r in state.replicas if r in alive]
    if candidates:
        # The dead brokers leave the ISR with the election (as Kafka's controller
        # does), so acks=all on the new leader does not wait for them to time out.
        isr = tuple(r for r in state.isr if r in alive) or (candidates[0],)
        return dataclasses.replace(
            state, leader=candidates[0], leader_epoch=state.leader_epoch + 1, isr=isr
        )
    if state.leader:
        return dataclasses.replace(state, leader="", leader_epoch=state.leader_epoch + 1)
    return None


class Controller:
    """Campaigns for the controller key and, while holding it, does its duties."""

    def __init__(
        self,
        session: EtcdSession,
        layout: KeyLayout,
        watcher: MetadataWatcher,
        broker_id: str,
        lease_id: Callable[[], int],
    ) -> None:
        self._session = session
        self._layout = layout
        self._watcher = watcher
        self._cache = watcher.cache
        self._me = broker_id
        self._lease_id = lease_id
        self._term = 0  # create revision of our controller key; 0 when not controller
        self._task: asyncio.Task[None] | None = None

    @property
    def is_controller(self) -> bool:
        """True while this broker holds the controller key (as far as its cache knows)."""
        return self._term != 0

    def start(self) -> None:
        """Start campaigning."""
        self._task = asyncio.create_task(self._loop(), name="etcd-controller")

    async def close(self) -> None:
        """Stop; the key goes away with the lease (the caller revokes it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        backoff = Backoff(first=0.1, cap=2.0)
        failing = False  # only the first failure of an outage is a warning
        while True:
            seen = self._cache.revision
            try:
                await self._step()
                backoff.reset()
                failing = False
                retry_after = None
            except EtcdUnavailableError as exc:
                (log.debug if failing else log.warning)(
                    "controller.etcd_unavailable", broker_id=self._me, error=str(exc)
                )
                failing = True
                retry_after = backoff.next()
            except CoordinatorError as exc:
                log.error("controller.failed", broker_id=self._me, error=str(exc))
                retry_after = backoff.next()
            await self._watcher.wait_changed(seen, retry_after)

    async def _step(self) -> None:
        holder = self._cache.controller
        lease = self._lease_id()
        if holder is None:
            self._resign("no controller key")
            registered = self._cache.brokers.get(self._me)
            if lease and registered is not None and registered.lease == lease:
                await self._campaign(lease)
            return
        if holder.broker_id == self._me and holder.lease == lease:
            if self._term != holder.term:
                self._term = holder.term
                log.info("controller.elected", broker_id=self._me, term=holder.term)
            await self._reconcile()
        else:
            self._resign(f"controller is {holder.broker_id}")

    def _resign(self, reason: str) -> None:
        if self._term:
            log.info("controller.deposed", broker_id=self._me, term=self._term, reason=reason)
            self._term = 0

    async def _campaign(self, lease: int) -> None:
        key = self._layout.controller
        response = await self._session.txn(
            [ops.created_at(key, 0)],
            [ops.put(key, self._me.encode(), lease=lease)],
            what="controller campaign",
        )
        if response.succeeded:
            # the next step (after the watch applies it) logs controller.elected
            await self._watcher.wait_applied(
                response.header.revision, self._session.request_timeout_s
            )

    async def _reconcile(self) -> None:
        alive = frozenset(self._cache.brokers)
        for state in list(self._cache.all_states()):
            entry = self._cache.topics.get(state.topic)
            unclean = entry is not None and entry.spec.config.get(UNCLEAN_KEY, "0") == "1"
            target = next_leadership(state, alive, unclean=unclean)
            if target is None:
                continue
            if not await self._write(state, target):
                return  # stale or deposed: the loop runs again once the cache has moved
            if not target.leader:
                log.warning(
                    "controller.partition_offline",
                    topic=state.topic,
                    partition=state.partition,
                    previous_leader=state.leader,
                    leader_epoch=target.leader_epoch,
                    isr=list(state.isr),
                )
            else:
                log.info(
                    "controller.partition_online"
                    if not state.leader
                    else "controller.leader_moved",
                    topic=state.topic,
                    partition=state.partition,
                    previous_leader=state.leader,
                    leader=target.leader,
                    leader_epoch=target.leader_epoch,
                )

    async def _write(self, state: PartitionState, target: PartitionState) -> bool:
        key = self._layout.partition(state.topic, state.partition)
        response = await self._session.txn(
            [
                ops.exists(key),
                ops.modified_at(key, state.version),
                ops.created_at(self._layout.controller, self._term),
            ],
            [ops.put(key, encode_partition(target))],
            what=f"controller write of {state.topic}/{state.partition}",
        )
        if not response.succeeded:
            log.info(
                "controller.write_refused",
                topic=state.topic,
                partition=state.partition,
                version=state.version,
                term=self._term,
            )
            return False
        await self._watcher.wait_applied(response.header.revision, self._session.request_timeout_s)
        return True
