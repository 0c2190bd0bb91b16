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


class FailedPreconditionError(CometError):
    """The broker's state does not allow the call now (FAILED_PRECONDITION)."""


class BrokerUnavailableError(CometError):
    """No broker could be reached, or it is shutting down (UNAVAILABLE)."""

    retriable = True


class NotLeaderError(FailedPreconditionError):
    """The broker does not lead the partition (FAILED_PRECONDITION); refresh metadata."""

    retriable = True

    def __init__(self, message: str, leader_id: str = "", leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_address = leader_address


class NotCoordinatorError(FailedPreconditionError):
    """The broker does not coordinate the group (FAILED_PRECONDITION); find the coordinator."""

    retriable = True


class StaleGenerationError(FailedPreconditionError):
    """A group call from an old generation; re-join the group (its offsets were not committed)."""


class GroupNotFoundError(CometError):
    """The consumer group does not exist (NOT_FOUND)."""


class GroupNotEmptyError(FailedPreconditionError):
    """The operation needs a group without live members (FAILED_PRECONDITION)."""


class UnknownMemberError(CometError):
    """The group coordinator does not know this member (expired or left); join again."""


class ProducerFencedError(FailedPreconditionError):
    """An idempotent producer's epoch is older than its id's latest: another instance took over."""


class OutOfOrderSequenceError(FailedPreconditionError):
    """An idempotent batch did not continue its partition's sequence; it was not written."""


class NotEnoughReplicasError(BrokerUnavailableError):
    """Fewer in-sync replicas than min.insync.replicas: acks=all refused, nothing written."""


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


# Broker error class names (trailing metadata "comet-error") with a more
# precise client type than their status code alone gives.
_BY_REASON: dict[str, type[CometError]] = {
    "StaleGenerationError": StaleGenerationError,
    "NotCoordinatorError": NotCoordinatorError,
    "NotEnoughReplicasError": NotEnoughReplicasError,
    "UnknownMemberError": UnknownMemberError,
    "GroupNotFoundError": GroupNotFoundError,
    "GroupNotEmptyError": GroupNotEmptyError,
    "PartitionNotFoundError": TopicNotFoundError,
    "ProducerFencedError": ProducerFencedError,
    "OutOfOrderSequenceError": OutOfOrderSequenceError,
    "BrokerOverloadedError": BrokerUnavailableError,  # --max-inflight-requests: retry later
}


def from_rpc_error(exc: grpc.RpcError, address: str = "") -> CometError:
    """Translate a failed gRPC call into the matching CometError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    where = f" [{address}]" if address else ""
    meta = {}
    if hasattr(exc, "trailing_metadata"):
        meta = {k: str(v) for k, v in (exc.trailing_metadata() or ())}
    reason = meta.get("comet-error", "")
    if reason == "NotLeaderError" or (
        code == grpc.StatusCode.FAILED_PRECONDITION and "comet-leader-id" in meta
    ):
        return NotLeaderError(
            details + where, meta.get("comet-leader-id", ""), meta.get("comet-leader-address", "")
        )
    if reason in _BY_REASON:
        return _BY_REASON[reason](details + where)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPreconditionError(details + where)
    return _BY_CODE.get(code, BrokerInternalError)(details + where)
