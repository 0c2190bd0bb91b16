"""Cluster coordination: the Coordinator contract and its implementations."""

from comet.cluster.coordinator import (
    BrokerRecord,
    Coordinator,
    CoordinatorError,
    MetadataListener,
    PartitionState,
    StaleStateError,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)
from comet.cluster.local import LocalCoordinator
from comet.cluster.placement import NotEnoughBrokersError

__all__ = [
    "BrokerRecord",
    "Coordinator",
    "CoordinatorError",
    "LocalCoordinator",
    "MetadataListener",
    "NotEnoughBrokersError",
    "PartitionState",
    "StaleStateError",
    "TopicExistsError",
    "TopicNotFoundError",
    "TopicSpec",
]
