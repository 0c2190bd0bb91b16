"""Rules for names and numbers that arrive from clients."""

from __future__ import annotations

from comet.broker.errors import InvalidRequestError
from comet.names import TOPIC_NAME_RE

MAX_PARTITIONS = 10_000
MAX_REPLICATION_FACTOR = 16


def validate_topic_name(name: str, field: str = "name") -> None:
    """Raise InvalidRequestError unless `name` is a legal topic name.

    Legal: 1 to 249 characters from [A-Za-z0-9._-], and not "." or "..", so a
    topic directory can never escape the data directory.
    """
    if not name:
        raise InvalidRequestError(f"{field}: topic name must not be empty")
    if not TOPIC_NAME_RE.fullmatch(name):
        raise InvalidRequestError(
            f"{field}: topic name {name[:300]!r} must be 1-249 characters of [A-Za-z0-9._-]"
        )
    if name in (".", ".."):
        raise InvalidRequestError(f"{field}: topic name must not be '.' or '..'")


def validate_group_name(name: str, field: str = "group") -> None:
    """Raise InvalidRequestError unless `name` is a legal group name (the topic name rules)."""
    if not name:
        raise InvalidRequestError(f"{field}: group name must not be empty")
    if not TOPIC_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidRequestError(
            f"{field}: group name {name[:300]!r} must be 1-249 characters of [A-Za-z0-9._-], "
            "not '.' or '..'"
        )


def validate_partitions(partitions: int, field: str = "partitions") -> None:
    """Raise InvalidRequestError unless 1 <= partitions <= MAX_PARTITIONS."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidRequestError(
            f"{field}: must be between 1 and {MAX_PARTITIONS}, got {partitions}"
        )


def validate_replication_factor(rf: int, brokers: int, field: str = "replication_factor") -> None:
    """Raise InvalidRequestError unless 1 <= rf <= the number of live brokers."""
    if rf < 1 or rf > MAX_REPLICATION_FACTOR:
        raise InvalidRequestError(
            f"{field}: must be between 1 and {MAX_REPLICATION_FACTOR}, got {rf}"
        )
    if rf > brokers:
        raise InvalidRequestError(
            f"{field}: {rf} is more than the {brokers} live broker(s); "
            "start more brokers or lower the replication factor"
        )
