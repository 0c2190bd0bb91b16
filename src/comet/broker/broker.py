"""The broker: topics, partitions and the request logic behind every RPC.

It sits on a Coordinator (metadata) and a LogManager (data) and knows
nothing of gRPC: the server layer turns requests into these calls and
BrokerError subclasses into status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from comet.broker.config import DEFAULT_FETCH_MAX_BYTES, BrokerConfig
from comet.broker.errors import (
    BrokerUnavailableError,
    InvalidRequestError,
    NotCoordinatorError,
    NotLeaderError,
    PartitionNotFoundError,
    TopicAlreadyExistsError,
    TopicNotFoundError,
)
from comet.broker.group_coordinator import GroupCoordinator
from comet.broker.log_manager import LogManager
from comet.broker.original_api import OriginalApi
from comet.broker.partition import Partition
from comet.broker.replica_manager import ReplicaManager
from comet.broker.validation import (
    validate_partitions,
    validate_replication_factor,
    validate_topic_name,
)
from comet.cluster import (
    BrokerRecord,
    Coordinator,
    NotEnoughBrokersError,
    PartitionState,
    TopicExistsError,
    TopicSpec,
)
from comet.cluster import TopicNotFoundError as CoordTopicNotFound
from comet.records import (
    Record,
)
from comet.storage import AppendInfo, InvalidConfigError, ReadResult

log = structlog.get_logger(__name__)

EARLIEST = -2
LATEST = -1


class RemoteReader(Protocol):
    """Reads from a partition's leader on another broker (provided by the server layer)."""

    async def read_records(
        self, address: str, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        """Up to max_records records of topic/partition from `offset`, read at `address`."""
        ...

    async def log_range(self, address: str, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of topic/partition, asked at `address`."""
        ...


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic with its effective config and per-partition log figures."""

    spec: TopicSpec
    config: Mapping[str, str]
    partitions: list[tuple[PartitionState, Partition | None]]


class Broker(OriginalApi):
    """Serves topics and partitions; one per process (the original per-record API in a mixin)."""

    def __init__(self, config: BrokerConfig, coordinator: Coordinator) -> None:
        self.config = config
        self.coordinator = coordinator
        self.logs = LogManager(config.data_dir, config.log_defaults)
        self.me = BrokerRecord(config.broker_id, config.advertised, config.peer_advertise_addr)
        self.groups = GroupCoordinator(coordinator, self, coordinator_id=config.broker_id)
        self._partitions: dict[tuple[str, int], Partition] = {}
        # Latest known state of every partition in the cluster, and where brokers are.
        self._states: dict[tuple[str, int], PartitionState] = {}
        self._addresses: dict[str, str] = {}  # what clients dial
        self._peer_addresses: dict[str, str] = {}  # what this broker dials
        self._topics: dict[str, TopicSpec] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._converge_lock = asyncio.Lock()
        self._running = False
        # Reads of partitions led elsewhere (group Poll in cluster mode) and calls to
        # leaders (replication); set by the server layer.
        self.remote: RemoteReader | None = None
        self.replicas = ReplicaManager(
            coordinator, self.me.id, config.replica_lag_time_max_ms / 1000, self.peer_address
        )

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Lock the data directory, load metadata, open every hosted log."""
        self.logs.lock()
        try:
            await self.coordinator.start(self.me)
            self.coordinator.add_listener(self._converge)
            await self._converge()
            # after _converge, so its topic listener runs after the logs are opened
            await self.groups.start()
        except BaseException:
            self.logs.unlock()
            raise
        self._running = True
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        self._tasks.append(
            asyncio.create_task(
                self.replicas.shrink_loop(lambda: list(self._partitions.values())),
                name="isr-shrink",
            )
        )
        if self.config.log_defaults.flush_policy == "interval":
            self._tasks.append(asyncio.create_task(self._interval_flush_loop(), name="flush"))
        log.info(
            "broker.started",
            broker_id=self.me.id,
            address=self.me.address,
            peer_address=self.me.peer_dial_address,
            topics=len(self._topics),
            partitions=len(self._partitions),
        )

    async def stop(self) -> None:
        """Stop background work, release long-polls, fsync and close every log."""
        self._running = False
        await self.groups.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.replicas.stop()
        for partition in self._partitions.values():
            partition.close_waiters()
            await partition.flusher.close()
        self._partitions.clear()
        await self.coordinator.close()
        await self.logs.close()
        log.info("broker.stopped", broker_id=self.me.id)

    def release_fetchers(self) -> None:
        """Answer every pending long-poll fetch and JoinGroup now (the first step of a shutdown)."""
        self._running = False
        self.groups.release_waiters()
        for partition in self._partitions.values():
            partition.close_waiters()

    async def _converge(self) -> None:
        """Make local logs match the coordinator.

        Opens the partitions this broker hosts (as leader or follower), drops
        deleted topics, and refreshes every hosted partition's leadership
        (leader, epoch, ISR) and the broker address book.
        """
        async with self._converge_lock:
            brokers = await self.coordinator.list_brokers()
            self._addresses = {b.id: b.address for b in brokers}
            self._peer_addresses = {b.id: b.peer_dial_address for b in brokers}
            specs = {t.name: t for t in await self.coordinator.list_topics()}
            for name in set(self._topics) - set(specs):
                await self._drop_topic(name)
            for name in self.logs.topics_on_disk() - set(specs):
                log.warning("topic.orphan_removed", topic=name)
                await self.logs.delete_topic(name)
            for spec in specs.values():
                await self._converge_topic(spec)

    async def _converge_topic(self, spec: TopicSpec) -> None:
        try:
            states = await self.coordinator.partition_states(spec.name)
        except CoordTopicNotFound:
            return  # deleted meanwhile: the next round drops it
        for state in states:
            key = (spec.name, state.partition)
            partition = self._partitions.get(key)
            if partition is None and self.me.id in state.replicas:
                plog = await asyncio.to_thread(
                    self.logs.open_log, spec.name, state.partition, spec.config
                )
                partition = Partition(
                    spec.name,
                    state.partition,
                    plog,
                    state.leader_epoch,
                    me=self.me.id,
                    on_isr_change=self.replicas.request_isr_change,
                )
                self._partitions[key] = partition
            if partition is not None:
                partition.update_state(state, self.me.id)
                await self.replicas.follow(partition, state)
            self._states[key] = state
        self._topics[spec.name] = spec
        self._round_robin.setdefault(spec.name, itertools.count())

    async def _drop_topic(self, name: str) -> None:
        self._topics.pop(name, None)
        self._round_robin.pop(name, None)
        for key in [k for k in self._states if k[0] == name]:
            del self._states[key]
        await self.replicas.stop_topic(name)
        for key in [k for k in self._partitions if k[0] == name]:
            partition = self._partitions.pop(key)
            partition.close_waiters(TopicNotFoundError(f"topic {name!r} was deleted"))
            await partition.flusher.close()
        await self.logs.delete_topic(name)

    async def _retention_loop(self) -> None:
        interval = self.config.retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.logs.apply_retention)
            except OSError as exc:
                log.error("retention.failed", error=str(exc))

    async def _interval_flush_loop(self) -> None:
        interval = self.config.log_defaults.flush_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for partition in list(self._partitions.values()):
                try:
                    await partition.flusher.flush_now()
                except OSError as exc:
                    log.error(
                        "flush.failed",
                        topic=partition.topic,
                        partition=partition.index,
                        error=str(exc),
                    )

    # --- admin -----------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 0,
        replication_factor: int = 0,
        config: Mapping[str, str] | None = None,
    ) -> list[PartitionState]:
        """Validate and create a topic; 0 partitions or RF means the broker default."""
        self._check_running()
        validate_topic_name(name)
        partitions = partitions or self.config.default_partitions
        replication_factor = replication_factor or self.config.default_replication_factor
        validate_partitions(partitions)
        brokers = await self.coordinator.list_brokers()
        validate_replication_factor(replication_factor, len(brokers))
        overrides = dict(config or {})
        try:
            self.logs.topic_config(overrides)
        except InvalidConfigError as exc:
            raise InvalidRequestError(f"config: {exc}") from None
        try:
            states = await self.coordinator.create_topic(
                TopicSpec(name, partitions, replication_factor, overrides)
            )
        except TopicExistsError:
            # Whoever hears "already exists" may produce at once: make sure the
            # creator's partitions are open here before answering.
            await self._converge()
            raise TopicAlreadyExistsError(f"topic {name!r} already exists") from None
        except NotEnoughBrokersError as exc:  # the live set changed since the check above
            raise InvalidRequestError(f"replication_factor: {exc}") from None
        log.info(
            "topic.created",
            topic=name,
            partitions=partitions,
            replication_factor=replication_factor,
        )
        return states

    async def delete_topic(self, name: str) -> None:
        """Delete a topic with all its data."""
        self._check_running()
        validate_topic_name(name)
        try:
            await self.coordinator.delete_topic(name)
        except CoordTopicNotFound:
            raise TopicNotFoundError(f"topic {name!r} does not exist") from None
        log.info("topic.deleted", topic=name)

    async def list_topics(self) -> list[TopicSpec]:
        """Every topic, sorted by name."""
        return await self.coordinator.list_topics()

    async def metadata(
        self, topics: Sequence[str]
    ) -> tuple[list[BrokerRecord], list[tuple[TopicSpec, list[PartitionState]]]]:
        """Brokers and partition placement of `topics` (all topics when empty)."""
        for name in topics:
            validate_topic_name(name, "topics")
        specs = await self.coordinator.list_topics()
        if topics:
            wanted = set(topics)
            missing = wanted - {s.name for s in specs}
            if missing:
                raise TopicNotFoundError(f"topics: {', '.join(sorted(missing))} do not exist")
            specs = [s for s in specs if s.name in wanted]
        out = [(spec, await self.coordinator.partition_states(spec.name)) for spec in specs]
        return await self.coordinator.list_brokers(), out

    async def describe_topic(self, name: str) -> TopicDescription:
        """A topic's effective config and log figures per partition."""
        validate_topic_name(name)
        spec = await self.coordinator.get_topic(name)
        if spec is None:
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        states = await self.coordinator.partition_states(name)
        config = self.logs.topic_config(spec.config).to_dict()
        parts = [(s, self._partitions.get((name, s.partition))) for s in states]
        return TopicDescription(spec, config, parts)

    # --- data path ---------------------------------------------------------

    def partition(self, topic: str, index: int) -> Partition:
        """The partition if this broker leads it; NOT_FOUND or NotLeaderError otherwise."""
        found = self._partitions.get((topic, index))
        if found is not None and found.is_leader:
            return found
        validate_topic_name(topic, "topic")
        spec = self._topics.get(topic)
        if spec is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        if not 0 <= index < spec.partitions:
            raise PartitionNotFoundError(
                f"partition: topic {topic!r} has partitions 0..{spec.partitions - 1}, not {index}"
            )
        raise self.not_leader(topic, index)

    def not_leader(self, topic: str, index: int) -> NotLeaderError:
        """The error that sends a client to the partition's leader (or says there is none)."""
        state = self._states.get((topic, index))
        leader = state.leader if state is not None else ""
        if not leader:
            return NotLeaderError(
                f"{topic}/{index} has no live leader right now; retry after a metadata refresh"
            )
        address = self._addresses.get(leader, "")
        return NotLeaderError(
            f"{topic}/{index} is led by broker {leader} at {address or 'an unknown address'}, "
            f"not by {self.me.id}",
            leader,
            address,
        )

    def leader_address(self, topic: str, index: int) -> tuple[str, str] | None:
        """(leader id, the address brokers dial it at) of a partition, or None."""
        state = self._states.get((topic, index))
        if state is None or not state.leader:
            return None
        return state.leader, self._peer_addresses.get(state.leader, "")

    def broker_address(self, broker_id: str) -> str | None:
        """Address clients dial for a live broker, or None."""
        return self._addresses.get(broker_id)

    def peer_address(self, broker_id: str) -> str | None:
        """Address this broker dials for a live peer (its peer advertised address), or None."""
        return self._peer_addresses.get(broker_id)

    async def produce_batch(
        self, topic: str, partition: int, records: bytes | memoryview, acks: int, timeout_ms: int
    ) -> AppendInfo:
        """Append client-framed batches to one partition."""
        self._check_running()
        target = self.partition(topic, partition)
        if timeout_ms < 0:
            raise InvalidRequestError(f"timeout_ms: must be >= 0, got {timeout_ms}")
        timeout = (timeout_ms or self.config.produce_timeout_ms) / 1000
        return await target.produce(records, acks, timeout)

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int = 0,
        max_wait_ms: int = 0,
        min_bytes: int = 0,
    ) -> tuple[Partition, ReadResult]:
        """Stored batches from `offset`, long-polling up to max_wait_ms."""
        self._check_running()
        target = self.partition(topic, partition)
        if max_bytes < 0:
            raise InvalidRequestError(f"max_bytes: must be >= 0, got {max_bytes}")
        if max_wait_ms < 0:
            raise InvalidRequestError(f"max_wait_ms: must be >= 0, got {max_wait_ms}")
        if min_bytes < 0:
            raise InvalidRequestError(f"min_bytes: must be >= 0, got {min_bytes}")
        max_wait_ms = min(max_wait_ms, 60_000)
        result = await target.fetch(
            offset, max_bytes or DEFAULT_FETCH_MAX_BYTES, max_wait_ms / 1000, max(min_bytes, 1)
        )
        return target, result

    async def list_offsets(self, topic: str, partition: int, timestamp_ms: int) -> tuple[int, int]:
        """(offset, timestamp) for LATEST (-1), EARLIEST (-2) or a timestamp in ms."""
        target = self.partition(topic, partition)
        if timestamp_ms == LATEST:
            return target.high_watermark, -1
        if timestamp_ms == EARLIEST:
            return target.log.log_start_offset, -1
        if timestamp_ms < 0:
            raise InvalidRequestError(
                f"timestamp_ms: must be -1 (latest), -2 (earliest) or >= 0, got {timestamp_ms}"
            )
        offset = target.log.offset_for_timestamp(timestamp_ms)
        if offset is None or offset >= target.high_watermark:
            return -1, -1
        return offset, timestamp_ms

    def _leads(self, topic: str, partition: int) -> bool:
        found = self._partitions.get((topic, partition))
        return found is not None and found.is_leader

    async def replica_fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        replica_id: str,
        leader_epoch: int,
        max_bytes: int,
        max_wait_ms: int,
    ) -> tuple[Partition, ReadResult]:
        """Serve a follower's fetch at the leader."""
        self._check_running()
        target = self.partition(topic, partition)
        if max_bytes < 0 or max_wait_ms < 0:
            raise InvalidRequestError("max_bytes and max_wait_ms: must be >= 0")
        result = await target.replica_fetch(
            replica_id,
            offset,
            leader_epoch,
            max_bytes or DEFAULT_FETCH_MAX_BYTES,
            min(max_wait_ms, 60_000) / 1000,
        )
        return target, result

    def offset_for_leader_epoch(
        self, topic: str, partition: int, leader_epoch: int, current_leader_epoch: int
    ) -> tuple[int, int]:
        """(largest epoch <= leader_epoch here, where it ends) for a follower's truncation."""
        target = self.partition(topic, partition)
        target.check_epoch(current_leader_epoch)
        return target.log.leader_epochs.end_offset_for(leader_epoch, target.log.log_end_offset)

    def coordinator_for(self, group: str) -> str:
        """Id of the broker coordinating `group`: a fixed hash over the live brokers."""
        ids = sorted(self._addresses) or [self.me.id]
        return ids[zlib.crc32(group.encode()) % len(ids)]

    def forward_target(self, topic: str, partition: int) -> str | None:
        """Peer address of the leader to forward a read to, or None to serve it here."""
        if self._leads(topic, partition):
            return None
        leader = self.leader_address(topic, partition)
        if leader is None or not leader[1] or leader[0] == self.me.id:
            return None  # no leader known: serving here answers the precise error
        return leader[1]

    def group_forward_target(self, group: str) -> str | None:
        """Peer address of the group's coordinator if it is another broker, else None."""
        owner = self.coordinator_for(group)
        if owner == self.me.id:
            return None
        return self._peer_addresses.get(owner) or None

    def check_group_coordinator(self, group: str) -> None:
        """Raise NotCoordinatorError unless this broker coordinates `group`."""
        owner = self.coordinator_for(group)
        if owner != self.me.id:
            raise NotCoordinatorError(
                f"group {group!r} is coordinated by broker {owner}, not {self.me.id}",
                owner,
                self._addresses.get(owner, ""),
            )

    def _check_running(self) -> None:
        if not self._running:
            raise BrokerUnavailableError("broker is not serving (starting or shutting down)")
