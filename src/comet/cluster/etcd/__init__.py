"""Cluster mode: the Coordinator contract on etcd (see `coordinator` and `keys`)."""

from comet.cluster.etcd.coordinator import DEFAULT_LEASE_TTL_S, DEFAULT_PREFIX, EtcdCoordinator
from comet.cluster.etcd.errors import BrokerIdConflictError, EtcdRequestError, EtcdUnavailableError

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_PREFIX",
    "BrokerIdConflictError",
    "EtcdCoordinator",
    "EtcdRequestError",
    "EtcdUnavailableError",
]
