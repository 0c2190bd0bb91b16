"""Public exceptions of the Comet client library.

gRPC status codes are mapped to these at one boundary (`from_rpc_error`);
user code never sees grpc exceptions.
"""

from __future__ import annotations

import grpc


class CometError(Exception):
    """Base of every error the client raises."""

    retriable: bool = False


# --- the request is wrong ----------------------------------------------------


class InvalidRequestError(CometError):
    """A field broke a rule (INVALID_ARGUMENT); the message names it."""


class TopicNotFoundError(CometError):
    """The topic or partition does not exist (NOT_FOUND)."""


class TopicAlreadyExistsError(CometError):
    """create_topic for a name that is taken (ALREADY_EXISTS)."""


class OffsetOutOfRangeError(CometError):
    """The offset is outside the partition's log (OUT_OF_RANGE)."""


class RecordTooLargeError(CometError):
    """A request or batch above a size limit, or a full disk (RESOURCE_EXHAUSTED)."""


class UnsupportedError(CometError):
    """The broker does not implement the call (UNIMPLEMENTED)."""


# --- retry, maybe elsewhere ----------------------------------------------------


class BrokerUnavailableError(CometError):
    """No broker could be reached, or it is shutting down (UNAVAILABLE)."""

    retriable = True


class NotLeaderError(CometError):
    """The broker does not lead the partition (FAILED_PRECONDITION); refresh metadata."""

    retriable = True

    def __init__(self, message: str, leader_id: str = "", leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_address = leader_address


class RequestTimeoutError(CometError):
    """The call did not complete in time (DEADLINE_EXCEEDED); it may have taken effect."""

    retriable = True


class BrokerInternalError(CometError):
    """The broker failed unexpectedly (INTERNAL or UNKNOWN)."""


class ClientClosedError(CometError):
    """The client, producer or consumer was used after close()."""


_BY_CODE: dict[grpc.StatusCode, type[CometError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: TopicNotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: TopicAlreadyExistsError,
    grpc.StatusCode.OUT_OF_RANGE: OffsetOutOfRangeError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RecordTooLargeError,
    grpc.StatusCode.UNIMPLEMENTED: UnsupportedError,
    grpc.StatusCode.UNAVAILABLE: BrokerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeoutError,
    grpc.StatusCode.CANCELLED: BrokerUnavailableError,
}


def from_rpc_error(exc: grpc.RpcError, address: str = "") -> CometError:
    """Translate a failed gRPC call into the matching CometError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    where = f" [{address}]" if address else ""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        meta = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
        return NotLeaderError(
            details + where,
            str(meta.get("comet-leader-id", "")),
            str(meta.get("comet-leader-address", "")),
        )
    return _BY_CODE.get(code, BrokerInternalError)(details + where)
