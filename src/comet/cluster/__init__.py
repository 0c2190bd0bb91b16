"""Cluster coordination: the Coordinator contract and its implementations."""

from comet.cluster.coordinator import (
    BrokerRecord,
    Coordinator,
    CoordinatorError,
    PartitionState,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)
from comet.cluster.local import LocalCoordinator

__all__ = [
    "BrokerRecord",
    "Coordinator",
    "CoordinatorError",
    "LocalCoordinator",
    "PartitionState",
    "TopicExistsError",
    "TopicNotFoundError",
    "TopicSpec",
]
