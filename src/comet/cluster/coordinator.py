"""The Coordinator contract: where cluster metadata lives.

Two implementations keep it: `LocalCoordinator` (single-broker mode, a file
in the data directory) and, in cluster mode, one backed by etcd. The broker
above it does not know which one it runs on. Every method is a coroutine;
returned objects are immutable snapshots the caller may keep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class CoordinatorError(Exception):
    """Base of errors raised by a coordinator."""


class TopicExistsError(CoordinatorError):
    """create_topic for a name that is already taken."""


class TopicNotFoundError(CoordinatorError):
    """An operation named a topic the coordinator does not know."""


@dataclass(frozen=True, slots=True)
class BrokerRecord:
    """A live broker: its id, the address clients dial, and the one peers dial."""

    id: str
    address: str
    # Address other brokers dial for broker-to-broker calls (--peer-advertise-addr);
    # "" = the same as `address`.
    peer_address: str = ""

    @property
    def peer_dial_address(self) -> str:
        """The address other brokers use to reach this one."""
        return self.peer_address or self.address


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as created: partition count, replication factor, config overrides."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Placement and leadership of one partition."""

    topic: str
    partition: int
    replicas: tuple[str, ...]
    leader: str  # "" while the partition has no live leader (offline)
    leader_epoch: int
    isr: tuple[str, ...]
    # Version of the stored state (etcd: the key's mod revision); compare-and-set
    # writes (update_partition_state) are conditioned on it.
    version: int = 0

    @property
    def online(self) -> bool:
        """True when the partition has a leader."""
        return bool(self.leader)


MetadataListener = Callable[[], Awaitable[None]]
# Kept for readers of older code: every listener hears every metadata change.
TopicListener = MetadataListener


class StaleStateError(CoordinatorError):
    """A compare-and-set write found a newer version than the one it was based on."""


class Coordinator(Protocol):
    """What the broker needs from cluster metadata storage.

    Contract:
    - `create_topic` is atomic: afterwards the topic and all its partition
      states exist, or (on error) nothing does. It places replicas on live
      brokers and raises TopicExistsError when the name is taken.
    - `delete_topic` removes the topic and its partition states; it raises
      TopicNotFoundError when there is no such topic.
    - Listeners added with `add_listener` are awaited after every change of
      the topic set, of a partition state or of the live brokers, made in
      this process or (cluster mode) another. Changes may be coalesced: a
      listener re-reads what it needs.
    - `update_partition_state` is a compare-and-set: it stores `new` only if
      the stored state still has `expected.version`, and raises
      StaleStateError otherwise. Leaders, leader epochs and ISRs change only
      through it (fencing: a writer that read an old state cannot win).
    - `allocate_producer_id` returns a cluster-unique id, never reused, also
      across restarts.

    Committed offsets of consumer groups (the next offset to consume, per
    group and (topic, partition)):
    - `commit_offsets` returns only once the offsets are durable (they
      survive a restart of every broker). It is atomic: when a topic or
      partition does not exist it raises TopicNotFoundError and stores
      nothing. Offsets must be >= 0 (ValueError otherwise: a caller bug).
      When it raises anything else the offsets may or may not be stored.
    - `fetch_offsets` returns a new dict the caller owns; partitions
      without a commit are absent.
    - Deleting a topic drops every offset of it, so a topic created again
      under the same name starts without committed offsets.
    - Committing is not fenced here: the group coordinator checks member
      and generation before it calls `commit_offsets`.
    """

    async def start(self, broker: BrokerRecord) -> None:
        """Connect, register this broker and load state."""
        ...

    async def close(self) -> None:
        """Deregister and release every resource; idempotent."""
        ...

    async def list_brokers(self) -> list[BrokerRecord]:
        """The live brokers, sorted by id."""
        ...

    async def controller_id(self) -> str | None:
        """Id of the broker acting as controller, or None without one."""
        ...

    async def create_topic(self, spec: TopicSpec) -> list[PartitionState]:
        """Create a topic and place its partitions."""
        ...

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its partition states."""
        ...

    async def list_topics(self) -> list[TopicSpec]:
        """Every topic, sorted by name."""
        ...

    async def get_topic(self, name: str) -> TopicSpec | None:
        """One topic, or None."""
        ...

    async def partition_states(self, topic: str) -> list[PartitionState]:
        """The partition states of a topic ordered by partition; TopicNotFoundError if none."""
        ...

    def add_listener(self, listener: MetadataListener) -> None:
        """Await `listener` after every change of topics, partition states or brokers."""
        ...

    async def update_partition_state(
        self, expected: PartitionState, new: PartitionState
    ) -> PartitionState:
        """Replace `expected` by `new` if unchanged since; return the stored state."""
        ...

    async def allocate_producer_id(self) -> int:
        """A new producer id, unique in the cluster for good."""
        ...

    async def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store `offsets` of `group` durably, replacing earlier ones of the same partitions."""
        ...

    async def fetch_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """Every committed offset of `group`, keyed by (topic, partition); empty if none."""
        ...

    async def list_groups(self) -> list[str]:
        """Groups that have at least one committed offset, sorted."""
        ...

    async def delete_group_offsets(self, group: str) -> None:
        """Forget every committed offset of `group` (durably); no error if it has none."""
        ...
