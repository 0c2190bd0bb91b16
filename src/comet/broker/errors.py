"""Errors the broker reports to callers, each tied to one gRPC status code.

The server layer maps them with `status` (a grpc.StatusCode name) so the
broker itself does not depend on gRPC. Messages say what happened and, where
there is one, what to do.
"""

from __future__ import annotations

from typing import ClassVar


class BrokerError(Exception):
    """Base of errors that become a gRPC status."""

    status: ClassVar[str] = "INTERNAL"
    # Extra trailing metadata for the gRPC status (e.g. a legacy response body).
    extra_metadata: tuple[tuple[str, str | bytes], ...] = ()


# --- the request is wrong: retrying the same request cannot help ----------


class InvalidRequestError(BrokerError):
    """A field breaks a rule; the message names the field and the rule."""

    status = "INVALID_ARGUMENT"


class TopicNotFoundError(BrokerError):
    """The named topic does not exist."""

    status = "NOT_FOUND"


class PartitionNotFoundError(BrokerError):
    """The topic exists but has no such partition."""

    status = "NOT_FOUND"


class TopicAlreadyExistsError(BrokerError):
    """CreateTopic for a name that is taken."""

    status = "ALREADY_EXISTS"


class OffsetOutOfRangeError(BrokerError):
    """A read below the log start or beyond the log end."""

    status = "OUT_OF_RANGE"


class RequestTooLargeError(BrokerError):
    """A request or batch above the configured size limit."""

    status = "RESOURCE_EXHAUSTED"


class StorageFullError(BrokerError):
    """The disk is full; nothing of the request was written."""

    status = "RESOURCE_EXHAUSTED"


# --- consumer groups: the member must join again ---------------------------


class GroupNotFoundError(BrokerError):
    """The group has no members and no committed offsets."""

    status = "NOT_FOUND"


class UnknownMemberError(BrokerError):
    """The member id is not (or no longer) in the group; join again with an empty member_id."""

    status = "NOT_FOUND"


class StaleGenerationError(BrokerError):
    """A call from an older generation than the group's; join again with the same member_id."""

    status = "FAILED_PRECONDITION"


class GroupNotEmptyError(BrokerError):
    """A commit without a member id (a tool's) for a group that has live members."""

    status = "FAILED_PRECONDITION"


class CorruptDataError(BrokerError):
    """Stored bytes failed their CRC: they are not served (DATA_LOSS)."""

    status = "DATA_LOSS"


# --- the broker cannot serve it now: retry, maybe elsewhere ---------------


class NotLeaderError(BrokerError):
    """This broker does not lead the partition; `leader_id` names the one that does."""

    status = "FAILED_PRECONDITION"

    def __init__(self, message: str, leader_id: str = "", leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_address = leader_address


class NotCoordinatorError(BrokerError):
    """This broker does not coordinate the group; `coordinator_id` names the one that does."""

    status = "FAILED_PRECONDITION"

    def __init__(
        self, message: str, coordinator_id: str = "", coordinator_address: str = ""
    ) -> None:
        super().__init__(message)
        self.coordinator_id = coordinator_id
        self.coordinator_address = coordinator_address


class FencedLeaderEpochError(BrokerError):
    """A replica called with an older leader epoch than the current one."""

    status = "FAILED_PRECONDITION"


class ProducerFencedError(BrokerError):
    """An idempotent producer wrote with an older epoch than its id's latest: it is a zombie."""

    status = "FAILED_PRECONDITION"


class OutOfOrderSequenceError(BrokerError):
    """An idempotent producer's batch does not continue its sequence; nothing was written."""

    status = "FAILED_PRECONDITION"


class BrokerUnavailableError(BrokerError):
    """Shutting down or not ready; retry later or at another broker."""

    status = "UNAVAILABLE"


class NotEnoughReplicasError(BrokerError):
    """Fewer in-sync replicas than min.insync.replicas: acks=all cannot be honoured now."""

    status = "UNAVAILABLE"


class UnknownLeaderEpochError(BrokerError):
    """A replica called with a newer leader epoch than this broker knows: it will catch up."""

    status = "UNAVAILABLE"


class AckTimeoutError(BrokerError):
    """The data was appended but the acknowledgement did not complete in time."""

    status = "DEADLINE_EXCEEDED"


class UnimplementedError(BrokerError):
    """An RPC this broker version does not serve yet."""

    status = "UNIMPLEMENTED"
