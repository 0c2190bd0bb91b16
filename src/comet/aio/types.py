"""Plain result types returned by the client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as listed: name, partition count, replication factor."""

    name: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A broker: id and the address to dial."""

    id: str
    address: str


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """Placement of one partition (and, from describe_topic, its log figures)."""

    id: int
    leader: str
    replicas: tuple[str, ...]
    isr: tuple[str, ...]
    leader_epoch: int = 0
    log_start_offset: int = 0
    log_end_offset: int = 0
    high_watermark: int = 0
    size_bytes: int = 0
    segment_count: int = 0


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic with its effective configuration and partitions."""

    name: str
    replication_factor: int
    config: Mapping[str, str]
    partitions: tuple[PartitionInfo, ...]


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    """Brokers and partition placement, as one broker sees them."""

    brokers: tuple[BrokerInfo, ...]
    topics: Mapping[str, tuple[PartitionInfo, ...]] = field(default_factory=dict)
    controller_id: str = ""
    cluster_id: str = ""

    def broker_address(self, broker_id: str) -> str | None:
        """Address of a broker by id, or None."""
        for broker in self.brokers:
            if broker.id == broker_id:
                return broker.address
        return None


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """Where a produced batch set landed (offsets are -1 with acks=0)."""

    topic: str
    partition: int
    base_offset: int
    last_offset: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Raw batches of one partition and its log bounds.

    `records` is a view of the received response (no copy); `bytes()` it
    to keep the bytes beyond the response.
    """

    topic: str
    partition: int
    records: bytes | memoryview
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
