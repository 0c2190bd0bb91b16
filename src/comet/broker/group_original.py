"""The original Subscribe / Poll / Unsubscribe on top of the group coordinator.

The original API has no commit call: a Poll reads from the group's
committed offsets and commits past what it returns (at most once). A mixin
of GroupCoordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from comet.broker.assignment import TopicPartition
from comet.broker.errors import InvalidRequestError, PartitionNotFoundError, TopicNotFoundError
from comet.broker.groups import (
    DEFAULT_POLL_RECORDS,
    MAX_POLL_RECORDS,
    Group,
    GroupState,
    JoinResult,
    Member,
    PolledRecord,
    PollResult,
)
from comet.broker.validation import validate_group_name, validate_topic_name
from comet.cluster import Coordinator
from comet.records import Record

if TYPE_CHECKING:
    from comet.broker.group_coordinator import GroupLogs


class OriginalGroupApi:
    """Mixin of GroupCoordinator: the group calls of the original API."""

    _coordinator: Coordinator
    _logs: GroupLogs
    _now: Callable[[], float]

    if TYPE_CHECKING:  # provided by GroupCoordinator

        async def join(
            self,
            group: str,
            member_id: str,
            topics: Sequence[str],
            session_timeout_ms: int = 0,
            client_id: str = "",
            rebalance_timeout_ms: int = 0,
        ) -> JoinResult: ...
        def leave(self, group: str, member_id: str) -> None: ...
        def _check_serving(self) -> None: ...
        def _member(self, group: str, member_id: str) -> tuple[Group, Member]: ...
        async def _store_offsets(self, group: str, offsets: dict[TopicPartition, int]) -> None: ...

    async def subscribe(self, topic: str, group: str) -> JoinResult:
        """Original Subscribe: a new member of `group` consuming `topic` (which must exist).

        Unlike JoinGroup, which lets a member wait for a topic to be created,
        the original call answers NOT_FOUND for an unknown topic.
        """
        validate_topic_name(topic, "topic")
        if await self._coordinator.get_topic(topic) is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return await self.join(group, "", [topic])

    async def poll(self, topic: str, group: str, member_id: str, max_records: int) -> PollResult:
        """Original Poll: heartbeat, then records from the member's partitions of `topic`.

        While the group rebalances (or the member has not been told the
        current generation) the member re-joins and the answer is
        rebalance=true with the new generation and no records. Otherwise up
        to max_records records are read from the committed offsets (the log
        start without one), spread over the partitions, and the offsets after
        them are committed before answering: the original API has no commit
        call, so a Poll is its position tracking (at most once).
        """
        self._check_serving()
        validate_group_name(group)
        validate_topic_name(topic, "topic")
        if max_records < 0:
            raise InvalidRequestError(f"max_records: must be >= 0, got {max_records}")
        limit = min(max_records or DEFAULT_POLL_RECORDS, MAX_POLL_RECORDS)
        g, member = self._member(group, member_id)
        if topic not in member.topics:
            raise InvalidRequestError(
                f"topic: member {member_id!r} of group {group!r} consumes "
                f"{sorted(member.topics)}, not {topic!r}; Subscribe to it for a new member"
            )
        member.last_seen = self._now()
        async with member.poll_lock:
            if (
                g.state is not GroupState.STABLE
                or member.notified_generation != g.generation
                or g.members.get(member_id) is not member
            ):
                result = await self.join(
                    group,
                    member_id,
                    sorted(member.topics),
                    member.session_timeout_ms,
                    member.client_id,
                    member.rebalance_timeout_ms,
                )
                return PollResult(True, result.generation, [])
            generation = g.generation
            partitions = sorted(p for t, p in member.assignment if t == topic)
            if not partitions:
                return PollResult(False, generation, [])
            committed = await self._coordinator.fetch_offsets(group)
            if g.generation != generation or g.members.get(member_id) is not member:
                return PollResult(True, g.generation, [])
            records = await self._read_fairly(topic, partitions, committed, limit, member)
            if records:
                ends = {(r.topic, r.partition): r.record.offset + 1 for r in records}
                await self._store_offsets(group, ends)
            return PollResult(False, generation, records)

    async def unsubscribe(self, topic: str, group: str, member_id: str) -> None:
        """Original Unsubscribe: the member leaves the group."""
        validate_topic_name(topic, "topic")
        self.leave(group, member_id)

    async def _read_fairly(
        self,
        topic: str,
        partitions: list[int],
        committed: Mapping[TopicPartition, int],
        limit: int,
        member: Member,
    ) -> list[PolledRecord]:
        """Up to `limit` records from the committed positions, shared fairly.

        Each partition first gets an equal share, then what is left of the
        limit goes round again; the starting partition rotates per poll so no
        partition is always first.
        """
        start = member.poll_cursor % len(partitions)
        member.poll_cursor += 1
        order = partitions[start:] + partitions[:start]
        positions: dict[int, int] = {}
        ends: dict[int, int] = {}
        for p in order:
            try:
                log_start, high_watermark = await self._logs.log_range(topic, p)
            except (TopicNotFoundError, PartitionNotFoundError):
                continue  # deleted meanwhile; the rebalance that follows drops it
            # below the log start: retention removed it; above the end: the log was cut
            position = committed.get((topic, p), log_start)
            positions[p] = min(max(position, log_start), high_watermark)
            ends[p] = high_watermark
        readable = [p for p in order if p in positions and positions[p] < ends[p]]
        if not readable:
            return []
        got: dict[int, list[Record]] = {p: [] for p in readable}
        total = 0
        share = max(1, limit // len(readable))
        for cap in (share, limit):
            for p in readable:
                room = min(cap, limit - total)
                if room <= 0:
                    break
                if positions[p] >= ends[p]:
                    continue
                records = await self._logs.read_records(topic, p, positions[p], room)
                if records:
                    got[p].extend(records)
                    positions[p] = records[-1].offset + 1
                    total += len(records)
            if total >= limit:
                break
        return [PolledRecord(topic, p, r) for p in readable for r in got[p]]
