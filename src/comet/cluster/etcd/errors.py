"""Errors of the etcd coordinator, all CoordinatorErrors.

Lower-layer errors (grpc, aetcd) never leave the package: `EtcdSession`
maps them to these at one boundary.
"""

from __future__ import annotations

from comet.cluster.coordinator import CoordinatorError

# --- retriable: etcd is down, unreachable or too slow --------------------


class EtcdUnavailableError(CoordinatorError):
    """etcd did not answer in time; the operation may or may not have happened. Retry later."""


# --- not retriable as is ---------------------------------------------------


class EtcdRequestError(CoordinatorError):
    """etcd refused a request (too large, too many operations); the message says which limit."""


class BrokerIdConflictError(CoordinatorError):
    """Another live process is registered under this broker id."""
