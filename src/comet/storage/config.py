"""Per-partition log configuration with Kafka-style topic config keys."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from comet.records import BATCH_HEADER_SIZE
from comet.storage.errors import InvalidConfigError

# Defaults: one table, the same in code and docs.
DEFAULT_SEGMENT_BYTES = 1 << 30  # 1 GiB
DEFAULT_SEGMENT_MS = 7 * 24 * 3600 * 1000  # 7 days
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000  # 7 days; -1 keeps data forever
DEFAULT_RETENTION_BYTES = -1  # per partition; -1 = unlimited
DEFAULT_INDEX_INTERVAL_BYTES = 4096
DEFAULT_FLUSH_POLICY = "batch"
DEFAULT_FLUSH_INTERVAL_MS = 1000
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20  # 4 MiB of batches in one append
# Replication settings live in the same topic config (the broker reads them).
DEFAULT_MIN_INSYNC_REPLICAS = 1
DEFAULT_UNCLEAN_LEADER_ELECTION = 0  # 1 = a replica outside the ISR may become leader

FLUSH_POLICIES = ("batch", "interval", "none")
MIN_SEGMENT_BYTES = 1024
MAX_INT32 = (1 << 31) - 1  # segment positions live in uint32 index fields
MAX_INT64 = (1 << 63) - 1
UNLIMITED = -1

_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """How one partition's log is segmented, retained and flushed.

    flush_policy: "batch" fsyncs every acknowledged append before the ack
    (group commit shares one fsync among concurrent appends); "interval"
    fsyncs every flush_interval_ms and acknowledges without waiting; "none"
    leaves write-back to the OS and fsyncs only on segment roll and close.
    PartitionLog itself fsyncs only on roll and close; the broker applies the
    policy through LogFlusher.
    """

    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    segment_ms: int = DEFAULT_SEGMENT_MS
    retention_ms: int = DEFAULT_RETENTION_MS
    retention_bytes: int = DEFAULT_RETENTION_BYTES
    index_interval_bytes: int = DEFAULT_INDEX_INTERVAL_BYTES
    flush_policy: str = DEFAULT_FLUSH_POLICY
    flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    min_insync_replicas: int = DEFAULT_MIN_INSYNC_REPLICAS
    unclean_leader_election: int = DEFAULT_UNCLEAN_LEADER_ELECTION

    def __post_init__(self) -> None:
        for key, rule in _RULES.items():
            rule.check(key, getattr(self, rule.field))

    def with_overrides(self, overrides: Mapping[str, str]) -> LogConfig:
        """A copy with Kafka-style topic config keys applied; InvalidConfigError names the key."""
        changes: dict[str, Any] = {}
        for key, raw in overrides.items():
            rule = _RULES.get(key)
            if rule is None:
                raise InvalidConfigError(
                    key, f"unknown config key; known keys are {', '.join(_RULES)}"
                )
            changes[rule.field] = rule.parse(key, raw)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, str]:
        """Every setting under its topic config key, as strings."""
        return {key: str(getattr(self, rule.field)) for key, rule in _RULES.items()}


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one config key maps to a LogConfig field and which values it accepts."""

    field: str
    description: str
    valid: Callable[[Any], bool]
    integer: bool = True

    def parse(self, key: str, raw: object) -> int | str:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            raise InvalidConfigError(key, f"value must be a string, got {type(raw).__name__}")
        if not self.integer:
            return raw
        text = raw.strip()
        if not _INTEGER.fullmatch(text):
            raise InvalidConfigError(key, f"{raw!r} is not an integer; {self.description}")
        return int(text)

    def check(self, key: str, value: object) -> None:
        if self.integer and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidConfigError(key, f"{value!r} is not an integer; {self.description}")
        if not self.valid(value):
            raise InvalidConfigError(key, f"{value!r} is out of range; {self.description}")


def _between(low: int, high: int) -> Callable[[int], bool]:
    return lambda v: low <= v <= high


def _unlimited_or_between(low: int, high: int) -> Callable[[int], bool]:
    return lambda v: v == UNLIMITED or low <= v <= high


_RULES: dict[str, _Rule] = {
    "segment.bytes": _Rule(
        "segment_bytes",
        f"must be between {MIN_SEGMENT_BYTES} and {MAX_INT32}",
        _between(MIN_SEGMENT_BYTES, MAX_INT32),
    ),
    "segment.ms": _Rule("segment_ms", f"must be between 1 and {MAX_INT64}", _between(1, MAX_INT64)),
    "retention.ms": _Rule(
        "retention_ms",
        f"must be -1 (unlimited) or between 0 and {MAX_INT64}",
        _unlimited_or_between(0, MAX_INT64),
    ),
    "retention.bytes": _Rule(
        "retention_bytes",
        f"must be -1 (unlimited) or between 0 and {MAX_INT64}",
        _unlimited_or_between(0, MAX_INT64),
    ),
    "index.interval.bytes": _Rule(
        "index_interval_bytes", f"must be between 0 and {MAX_INT32}", _between(0, MAX_INT32)
    ),
    "flush.policy": _Rule(
        "flush_policy",
        f"must be one of {', '.join(FLUSH_POLICIES)}",
        lambda v: v in FLUSH_POLICIES,
        integer=False,
    ),
    "flush.interval.ms": _Rule(
        "flush_interval_ms", f"must be between 1 and {MAX_INT64}", _between(1, MAX_INT64)
    ),
    "min.insync.replicas": _Rule(
        "min_insync_replicas", "must be between 1 and 16", _between(1, 16)
    ),
    "unclean.leader.election.enable": _Rule(
        "unclean_leader_election", "must be 0 (off) or 1 (on)", _between(0, 1)
    ),
    "max.message.bytes": _Rule(
        "max_message_bytes",
        f"must be between {BATCH_HEADER_SIZE} (one batch header) and {MAX_INT32}",
        _between(BATCH_HEADER_SIZE, MAX_INT32),
    ),
}
