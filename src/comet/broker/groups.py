"""Consumer groups in memory: states, members, and what the group coordinator answers.

Membership is not persisted: after a broker restart members get NOT_FOUND
and join again. Committed offsets are persisted, through the Coordinator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from comet.broker.assignment import TopicPartition
from comet.records import Record

DEFAULT_SESSION_TIMEOUT_MS = 10_000
MIN_SESSION_TIMEOUT_MS = 1_000
MAX_SESSION_TIMEOUT_MS = 300_000
MAX_CLIENT_ID_LENGTH = 255
DEFAULT_POLL_RECORDS = 100
MAX_POLL_RECORDS = 10_000


class GroupState(StrEnum):
    """Where a group is in the rebalance cycle (Kafka's names)."""

    # no members; committed offsets may exist
    EMPTY = "Empty"
    # membership changed: members must re-join; completes when all have, or at the deadline
    PREPARING_REBALANCE = "PreparingRebalance"
    # every member has the assignment of the current generation
    STABLE = "Stable"
    # the coordinator stopped; nothing is served for the group any more
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class JoinResult:
    """The answer to a JoinGroup: who the member is and what it consumes in which generation."""

    member_id: str
    generation: int
    assignment: frozenset[TopicPartition]
    session_timeout_ms: int

    def by_topic(self) -> dict[str, list[int]]:
        """The assignment as sorted partitions per topic, topics sorted."""
        out: dict[str, list[int]] = {}
        for topic, partition in sorted(self.assignment):
            out.setdefault(topic, []).append(partition)
        return out


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """Whether the member must re-join, and the group's current generation."""

    rebalance: bool
    generation: int


@dataclass(frozen=True, slots=True)
class PolledRecord:
    """One record returned by the original Poll, with where it came from."""

    topic: str
    partition: int
    record: Record


@dataclass(frozen=True, slots=True)
class PollResult:
    """The answer to the original Poll: records, or a rebalance notice with the new generation."""

    rebalance: bool
    generation: int
    records: list[PolledRecord]


@dataclass(frozen=True, slots=True)
class MemberDescription:
    """A member as DescribeGroup shows it."""

    member_id: str
    client_id: str
    topics: tuple[str, ...]
    assignment: frozenset[TopicPartition]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Committed offset (-1 = none), log end (the high watermark) and lag of one partition.

    log_end_offset and lag are -1 when this broker does not host the partition.
    """

    topic: str
    partition: int
    committed: int
    log_end_offset: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """State, generation, members and per-partition lag of a group."""

    group: str
    state: GroupState
    generation: int
    members: list[MemberDescription]
    offsets: list[PartitionLag]


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One line of ListGroups."""

    group: str
    state: GroupState
    generation: int
    members: int


@dataclass(slots=True, eq=False)
class Member:
    """A live member of a group.

    `joining` is set while the member has joined the current rebalance round
    and waits for its result; such a member is not expired by its session
    timeout (the rebalance deadline bounds the wait instead).
    `notified_generation` is the last generation the member was told, so the
    original Poll (which carries no generation) knows when to say rebalance.
    """

    member_id: str
    client_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    last_seen: float
    assignment: frozenset[TopicPartition] = frozenset()
    joining: asyncio.Future[JoinResult] | None = None
    notified_generation: int = -1
    poll_cursor: int = 0
    poll_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def expired(self, now: float) -> bool:
        """True when not heard from within the session timeout (and not waiting in a join)."""
        return self.joining is None and now - self.last_seen > self.session_timeout_ms / 1000

    def describe(self) -> MemberDescription:
        """This member as DescribeGroup shows it."""
        return MemberDescription(
            self.member_id, self.client_id, tuple(sorted(self.topics)), self.assignment
        )


@dataclass(slots=True, eq=False)
class Group:
    """A consumer group: its state, generation and members."""

    name: str
    state: GroupState = GroupState.EMPTY
    generation: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    rebalance_deadline: float | None = None

    def topics(self) -> set[str]:
        """Every topic some member subscribes."""
        return {t for m in self.members.values() for t in m.topics}

    def all_joined(self) -> bool:
        """True when every member has joined the current rebalance round."""
        return all(m.joining is not None for m in self.members.values())

    def summary(self) -> GroupSummary:
        """This group as ListGroups shows it."""
        return GroupSummary(self.name, self.state, self.generation, len(self.members))
