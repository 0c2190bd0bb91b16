"""GroupCoordinator: consumer group membership, rebalances and committed offsets.

Kafka's classic (eager) protocol with the assignment computed here, on the
broker (see `assignment.assign`: balanced, sticky, deterministic).

States and transitions (one group)::

    Empty --join--> PreparingRebalance --all joined | deadline--> Stable
    Stable --join of a new member | changed topics | leave | session expiry
           | a subscribed topic created or deleted--> PreparingRebalance
    PreparingRebalance --last member gone--> Empty (generation bumped)
    any --coordinator stops--> Dead

- JoinGroup long-polls. It completes when every current member has joined
  this round, or when the rebalance deadline passes (the largest rebalance
  timeout of the members, counted from the start of the round); members that
  did not re-join by then are removed. Completing bumps the generation,
  computes the assignment and answers every pending join. A join from a
  member of a Stable group that changes nothing answers at once.
- Heartbeat answers rebalance=true while the group prepares a rebalance or
  when the member's generation is not the group's.
- CommitOffsets is fenced by member id and generation: the current
  generation is accepted also while a rebalance is prepared (members commit
  what they processed before re-joining); an older one is refused.
- Liveness: Join, Heartbeat, CommitOffsets and Poll refresh a member's
  session; `expire()` removes members not heard from within their session
  timeout and completes rounds whose deadline passed. A background task
  runs it periodically; tests call it directly with an injected clock.

This class does not know about cluster mode: which broker coordinates a
group is decided above it. It reads logs through `GroupLogs` (the Broker in
production, a small fake in unit tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog

from comet.broker.assignment import TopicPartition, assign
from comet.broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    GroupNotEmptyError,
    GroupNotFoundError,
    InvalidRequestError,
    PartitionNotFoundError,
    StaleGenerationError,
    TopicNotFoundError,
    UnknownMemberError,
)
from comet.broker.group_original import OriginalGroupApi
from comet.broker.groups import (
    DEFAULT_SESSION_TIMEOUT_MS,
    MAX_CLIENT_ID_LENGTH,
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
    Group,
    GroupDescription,
    GroupState,
    GroupSummary,
    HeartbeatResult,
    JoinResult,
    Member,
    PartitionLag,
)
from comet.broker.validation import validate_group_name, validate_topic_name
from comet.cluster import Coordinator
from comet.cluster import TopicNotFoundError as CoordTopicNotFound
from comet.records import Record

log = structlog.get_logger(__name__)

DEFAULT_CHECK_INTERVAL_S = 0.2
_MEMBER_PREFIX_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class GroupLogs(Protocol):
    """What the group coordinator reads from partition logs (the Broker provides it)."""

    async def log_range(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of a partition, from its leader; BrokerError."""
        ...

    async def read_records(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        """Up to max_records records from `offset`, all below the high watermark."""
        ...


class GroupCoordinator(OriginalGroupApi):
    """Membership, rebalances and offsets of every group this broker coordinates."""

    def __init__(
        self,
        coordinator: Coordinator,
        logs: GroupLogs,
        *,
        coordinator_id: str = "",
        now: Callable[[], float] = time.monotonic,
        check_interval_s: float | None = DEFAULT_CHECK_INTERVAL_S,
    ) -> None:
        self.coordinator_id = coordinator_id
        self._coordinator = coordinator
        self._logs = logs
        self._now = now
        self._check_interval_s = check_interval_s
        self._groups: dict[str, Group] = {}
        self._partition_counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._serving = False

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Learn the topics, follow their changes and start the expiry task."""
        self._coordinator.add_listener(self._on_topics_changed)
        self._partition_counts = await self._load_partition_counts()
        self._serving = True
        if self._check_interval_s is not None:
            self._task = asyncio.create_task(self._expiry_loop(), name="group-expiry")

    def release_waiters(self) -> None:
        """Answer every pending JoinGroup UNAVAILABLE and refuse new calls (shutdown, step one)."""
        self._serving = False
        for group in self._groups.values():
            group.state = GroupState.DEAD
            for member in group.members.values():
                _fail(
                    member.joining,
                    BrokerUnavailableError(
                        f"group {group.name!r}: the coordinator is shutting down; "
                        "join again (with the same member_id) once it is back"
                    ),
                )
                member.joining = None

    async def stop(self) -> None:
        """Release waiters and stop the expiry task."""
        self.release_waiters()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _expiry_loop(self) -> None:
        assert self._check_interval_s is not None
        while True:
            await asyncio.sleep(self._check_interval_s)
            try:
                self.expire()
            except Exception:
                log.exception("group.expiry_failed")

    def expire(self) -> None:
        """One pass: remove members past their session timeout, complete rounds past deadline."""
        now = self._now()
        for group in list(self._groups.values()):
            for member in list(group.members.values()):
                if group.members.get(member.member_id) is member and member.expired(now):
                    self._remove(
                        group,
                        member,
                        "session expired",
                        UnknownMemberError(
                            f"member {member.member_id!r} of group {group.name!r} expired "
                            "(no heartbeat within its session timeout); join again with an "
                            "empty member_id"
                        ),
                    )
            deadline = group.rebalance_deadline
            preparing = group.state is GroupState.PREPARING_REBALANCE
            if preparing and deadline is not None and now >= deadline:
                self._complete_rebalance(group, timed_out=True)

    # --- membership ------------------------------------------------------------

    async def join(
        self,
        group: str,
        member_id: str,
        topics: Sequence[str],
        session_timeout_ms: int = 0,
        client_id: str = "",
        rebalance_timeout_ms: int = 0,
    ) -> JoinResult:
        """Join (empty member_id) or re-join a group; returns once its rebalance completes."""
        self._check_serving()
        validate_group_name(group)
        wanted = _validate_topics(topics)
        session_ms = _validate_timeout(session_timeout_ms, "session_timeout_ms")
        rebalance_ms = _validate_timeout(rebalance_timeout_ms, "rebalance_timeout_ms", session_ms)
        if len(client_id) > MAX_CLIENT_ID_LENGTH:
            raise InvalidRequestError(
                f"client_id: at most {MAX_CLIENT_ID_LENGTH} characters, got {len(client_id)}"
            )
        now = self._now()
        if not member_id:
            g = self._groups.get(group)
            if g is None:
                g = self._groups[group] = Group(group)
            member = Member(
                _new_member_id(client_id), client_id, wanted, session_ms, rebalance_ms, now
            )
            g.members[member.member_id] = member
            log.info(
                "group.member_added",
                group=group,
                member=member.member_id,
                topics=sorted(wanted),
                session_timeout_ms=session_ms,
            )
            waiter = _joining(member)
            self._start_rebalance(g, "member joined")
        else:
            g, member = self._member(group, member_id)
            member.last_seen = now
            member.client_id = client_id or member.client_id
            member.session_timeout_ms = session_ms
            member.rebalance_timeout_ms = rebalance_ms
            changed = wanted != member.topics
            member.topics = wanted
            if g.state is GroupState.STABLE and not changed:
                return self._delivered(member, self._current(g, member))
            waiter = _joining(member)
            self._start_rebalance(g, "member changed its topics" if changed else "member joined")
        # shield: a caller that gives up (deadline, disconnect) stays joined for this round
        return self._delivered(member, await asyncio.shield(waiter))

    def heartbeat(self, group: str, member_id: str, generation: int) -> HeartbeatResult:
        """Refresh liveness; rebalance=true means re-join now."""
        self._check_serving()
        validate_group_name(group)
        g, member = self._member(group, member_id)
        member.last_seen = self._now()
        rebalance = g.state is GroupState.PREPARING_REBALANCE or generation != g.generation
        return HeartbeatResult(rebalance, g.generation)

    def leave(self, group: str, member_id: str) -> None:
        """Remove a member now; the others rebalance."""
        self._check_serving()
        validate_group_name(group)
        g, member = self._member(group, member_id)
        self._remove(
            g,
            member,
            "member left",
            UnknownMemberError(f"member {member_id!r} left group {group!r}"),
        )

    # --- offsets ---------------------------------------------------------------

    async def commit_offsets(
        self,
        group: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, int],
    ) -> None:
        """Store next-offsets-to-consume, fenced by member and generation; durable on return."""
        self._check_serving()
        validate_group_name(group)
        for (topic, partition), offset in offsets.items():
            validate_topic_name(topic, "offsets.topic")
            if offset < 0:
                raise InvalidRequestError(
                    f"offsets: offset of {topic}/{partition} must be >= 0, got {offset}"
                )
        self._check_commit_fence(group, member_id, generation)
        for topic in sorted({t for t, _ in offsets}):
            count = await self._partition_count(topic)
            for t, partition in offsets:
                if t == topic and not 0 <= partition < count:
                    raise PartitionNotFoundError(
                        f"offsets: topic {topic!r} has partitions 0..{count - 1}, not {partition}"
                    )
        # checked again: the group may have moved on while the topics were looked up
        self._check_commit_fence(group, member_id, generation)
        if offsets:
            await self._store_offsets(group, dict(offsets))

    async def fetch_offsets(
        self, group: str, partitions: Mapping[str, Sequence[int]] | None = None
    ) -> dict[TopicPartition, int]:
        """Committed offsets (-1 = none) of `partitions` (a topic with no partitions: all of
        them), or every committed offset when `partitions` is empty."""
        self._check_serving()
        validate_group_name(group)
        committed = await self._coordinator.fetch_offsets(group)
        if not partitions:
            return dict(sorted(committed.items()))
        out: dict[TopicPartition, int] = {}
        for topic, wanted in partitions.items():
            validate_topic_name(topic, "partitions.topic")
            count = await self._partition_count(topic)
            for partition in wanted or range(count):
                if not 0 <= partition < count:
                    raise PartitionNotFoundError(
                        f"partitions: topic {topic!r} has partitions 0..{count - 1}, "
                        f"not {partition}"
                    )
                out[(topic, partition)] = committed.get((topic, partition), -1)
        return out

    # --- inspection --------------------------------------------------------------

    async def describe(self, group: str) -> GroupDescription:
        """State, generation, members with assignment, and lag per partition."""
        self._check_serving()
        validate_group_name(group)
        g = self._groups.get(group)
        committed = await self._coordinator.fetch_offsets(group)
        if (g is None or not g.members) and not committed:
            raise GroupNotFoundError(f"group {group!r} has no members and no committed offsets")
        partitions = set(committed)
        members = []
        if g is not None:
            for member in sorted(g.members.values(), key=lambda m: m.member_id):
                members.append(member.describe())
                partitions.update(member.assignment)
            for topic in g.topics():
                partitions.update((topic, p) for p in range(self._partition_counts.get(topic, 0)))
        lags = [await self._lag(tp, committed.get(tp, -1)) for tp in sorted(partitions)]
        if g is None:
            return GroupDescription(group, GroupState.EMPTY, 0, members, lags)
        return GroupDescription(group, g.state, g.generation, members, lags)

    async def list_groups(self) -> list[GroupSummary]:
        """Groups with members or committed offsets, sorted by name."""
        self._check_serving()
        names = {name for name, g in self._groups.items() if g.members}
        names.update(await self._coordinator.list_groups())
        out = []
        for name in sorted(names):
            g = self._groups.get(name)
            out.append(g.summary() if g else GroupSummary(name, GroupState.EMPTY, 0, 0))
        return out

    # --- internals -------------------------------------------------------------

    def _check_serving(self) -> None:
        if not self._serving:
            raise BrokerUnavailableError(
                "group coordinator is not serving (starting or shutting down); retry later"
            )

    def _member(self, group: str, member_id: str) -> tuple[Group, Member]:
        g = self._groups.get(group)
        member = g.members.get(member_id) if g is not None and member_id else None
        if g is None or member is None:
            raise UnknownMemberError(
                f"member_id: {member_id!r} is not a member of group {group!r} (it left, expired, "
                "or the coordinator restarted); join again with an empty member_id"
            )
        return g, member

    def _check_commit_fence(self, group: str, member_id: str, generation: int) -> None:
        if not member_id:
            if generation != -1:
                raise InvalidRequestError(
                    f"generation: must be -1 with an empty member_id (a commit by a tool), "
                    f"got {generation}"
                )
            g = self._groups.get(group)
            if g is not None and g.members:
                raise GroupNotEmptyError(
                    f"group {group!r} has {len(g.members)} live member(s); commit as a member "
                    "(member_id and generation) or stop the consumers first"
                )
            return
        g, member = self._member(group, member_id)
        if generation != g.generation:
            raise StaleGenerationError(
                f"generation {generation} of member {member_id!r} is stale: group {group!r} "
                f"is at generation {g.generation}; join again with the same member_id"
            )
        member.last_seen = self._now()

    async def _partition_count(self, topic: str) -> int:
        spec = await self._coordinator.get_topic(topic)
        if spec is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return spec.partitions

    async def _store_offsets(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._coordinator.commit_offsets(group, offsets)
        except CoordTopicNotFound as exc:
            raise TopicNotFoundError(f"offsets: {exc}") from None

    def _current(self, g: Group, member: Member) -> JoinResult:
        return JoinResult(
            member.member_id, g.generation, member.assignment, member.session_timeout_ms
        )

    def _delivered(self, member: Member, result: JoinResult) -> JoinResult:
        member.notified_generation = result.generation
        return result

    def _remove(self, g: Group, member: Member, reason: str, error: BrokerError) -> None:
        del g.members[member.member_id]
        _fail(member.joining, error)
        member.joining = None
        log.info(
            "group.member_removed",
            group=g.name,
            member=member.member_id,
            reason=reason,
            generation=g.generation,
        )
        self._start_rebalance(g, reason)

    def _start_rebalance(self, g: Group, reason: str) -> None:
        if g.state is not GroupState.PREPARING_REBALANCE:
            g.state = GroupState.PREPARING_REBALANCE
            timeout_ms = max((m.rebalance_timeout_ms for m in g.members.values()), default=0)
            g.rebalance_deadline = self._now() + timeout_ms / 1000
            log.info(
                "group.rebalance_started",
                group=g.name,
                generation=g.generation,
                reason=reason,
                members=len(g.members),
                timeout_ms=timeout_ms,
            )
        if g.all_joined():
            self._complete_rebalance(g)

    def _complete_rebalance(self, g: Group, timed_out: bool = False) -> None:
        """Drop members that did not re-join, bump the generation, assign, answer every join."""
        missing = [m for m in g.members.values() if m.joining is None]
        for member in missing:
            del g.members[member.member_id]
        if missing:
            log.info(
                "group.members_removed",
                group=g.name,
                members=[m.member_id for m in missing],
                reason="did not re-join within the rebalance timeout",
            )
        g.generation += 1
        g.rebalance_deadline = None
        if not g.members:
            g.state = GroupState.EMPTY
            log.info("group.empty", group=g.name, generation=g.generation)
            return
        topics = g.topics()
        counts = {t: n for t, n in self._partition_counts.items() if t in topics}
        plan = assign(
            {m.member_id: m.topics for m in g.members.values()},
            counts,
            {m.member_id: m.assignment for m in g.members.values()},
        )
        g.state = GroupState.STABLE
        now = self._now()
        for member in g.members.values():
            member.assignment = frozenset(plan[member.member_id])
            member.last_seen = now
            waiter, member.joining = member.joining, None
            if waiter is not None and not waiter.done():
                waiter.set_result(self._current(g, member))
        log.info(
            "group.rebalance_completed",
            group=g.name,
            generation=g.generation,
            members=len(g.members),
            timed_out=timed_out,
        )

    async def _on_topics_changed(self) -> None:
        """Rebalance groups whose subscribed topics appeared, disappeared or changed size."""
        if not self._serving:
            return
        counts = await self._load_partition_counts()
        old, self._partition_counts = self._partition_counts, counts
        changed = {t for t in old.keys() | counts.keys() if old.get(t) != counts.get(t)}
        for g in list(self._groups.values()):
            if g.members and changed & g.topics():
                self._start_rebalance(g, "subscribed topics changed")

    async def _load_partition_counts(self) -> dict[str, int]:
        return {t.name: t.partitions for t in await self._coordinator.list_topics()}

    async def _lag(self, tp: TopicPartition, committed: int) -> PartitionLag:
        try:
            log_start, log_end = await self._logs.log_range(*tp)
        except BrokerError:
            return PartitionLag(tp[0], tp[1], committed, -1, -1)
        lag = log_end - (committed if committed >= 0 else log_start)
        return PartitionLag(tp[0], tp[1], committed, log_end, max(lag, 0))


def _validate_topics(topics: Sequence[str]) -> frozenset[str]:
    if not topics:
        raise InvalidRequestError("topics: at least one topic is required")
    for i, topic in enumerate(topics):
        validate_topic_name(topic, f"topics[{i}]")
    return frozenset(topics)


def _validate_timeout(value: int, field: str, default: int = DEFAULT_SESSION_TIMEOUT_MS) -> int:
    if value == 0:
        return default
    if not MIN_SESSION_TIMEOUT_MS <= value <= MAX_SESSION_TIMEOUT_MS:
        raise InvalidRequestError(
            f"{field}: must be 0 (the default) or between {MIN_SESSION_TIMEOUT_MS} and "
            f"{MAX_SESSION_TIMEOUT_MS} ms, got {value}"
        )
    return value


def _new_member_id(client_id: str) -> str:
    prefix = _MEMBER_PREFIX_UNSAFE.sub("-", client_id)[:64] or "member"
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _joining(member: Member) -> asyncio.Future[JoinResult]:
    """The member's waiter for the current round (shared by concurrent joins of it)."""
    if member.joining is None or member.joining.done():
        waiter: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        # a waiter failed after its caller went away must not log "never retrieved"
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        member.joining = waiter
    return member.joining


def _fail(waiter: asyncio.Future[JoinResult] | None, error: BrokerError) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_exception(error)
