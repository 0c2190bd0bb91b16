"""GroupCoordinator state machine: a fake clock, a LocalCoordinator in tmp_path, in-memory logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from comet.broker.errors import (
    BrokerUnavailableError,
    GroupNotEmptyError,
    GroupNotFoundError,
    InvalidRequestError,
    PartitionNotFoundError,
    StaleGenerationError,
    TopicNotFoundError,
    UnknownMemberError,
)
from comet.broker.group_coordinator import GroupCoordinator
from comet.broker.groups import GroupState, JoinResult
from comet.cluster import BrokerRecord, LocalCoordinator, TopicSpec
from comet.records import Record

ME = BrokerRecord("b1", "127.0.0.1:6174")


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class MemoryLogs:
    """GroupLogs over lists of records; everything appended is below the high watermark."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[Record]] = {}
        self.start: dict[tuple[str, int], int] = {}

    def append(self, topic: str, partition: int, *values: bytes) -> None:
        log = self.records.setdefault((topic, partition), [])
        base = self.start.get((topic, partition), 0) + len(log)
        for i, value in enumerate(values):
            log.append(Record(base + i, 1_700_000_000_000 + base + i, None, value, []))

    def truncate_front(self, topic: str, partition: int, new_start: int) -> None:
        """Retention: drop records below new_start."""
        key = (topic, partition)
        self.records[key] = [r for r in self.records.get(key, []) if r.offset >= new_start]
        self.start[key] = new_start

    async def log_range(self, topic: str, partition: int) -> tuple[int, int]:
        key = (topic, partition)
        start = self.start.get(key, 0)
        return start, start + len(self.records.get(key, []))

    async def read_records(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        return [r for r in self.records.get((topic, partition), []) if r.offset >= offset][
            :max_records
        ]


@dataclass
class Env:
    coordinator: LocalCoordinator
    groups: GroupCoordinator
    clock: Clock
    logs: MemoryLogs

    async def topic(self, name: str, partitions: int) -> None:
        await self.coordinator.create_topic(TopicSpec(name, partitions, 1))


async def make_env(path: Path, clock: Clock | None = None) -> Env:
    coordinator = LocalCoordinator(path)
    await coordinator.start(ME)
    clock = clock or Clock()
    logs = MemoryLogs()
    groups = GroupCoordinator(
        coordinator, logs, coordinator_id="b1", now=clock, check_interval_s=None
    )
    await groups.start()
    return Env(coordinator, groups, clock, logs)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await make_env(tmp_path)
    yield e
    await e.groups.stop()
    await e.coordinator.close()


async def pending_join(env: Env, member_id: str, topics: list[str], **kw) -> asyncio.Task:
    """Start a JoinGroup and let it run until it waits for the rebalance (or answers)."""
    task = asyncio.create_task(env.groups.join("g", member_id, topics, **kw))
    await asyncio.sleep(0)  # one scheduling step: the join registers before its first await
    return task


async def stable_pair(env: Env) -> tuple[JoinResult, JoinResult]:
    """Members a and b of group g splitting topic t (4 partitions), generation 2."""
    await env.topic("t", 4)
    a = await env.groups.join("g", "", ["t"], client_id="a")
    joining_b = await pending_join(env, "", ["t"], client_id="b")
    assert not joining_b.done()
    a = await env.groups.join("g", a.member_id, ["t"], client_id="a")
    b = await joining_b
    assert a.generation == b.generation == 2
    return a, b


def partitions(result: JoinResult, topic: str = "t") -> list[int]:
    return result.by_topic().get(topic, [])


# --- join, rejoin, generations --------------------------------------------------


async def test_first_member_gets_everything_and_a_rejoin_changes_nothing(env: Env) -> None:
    await env.topic("t", 4)
    first = await env.groups.join("g", "", ["t"], client_id="app one")
    assert first.member_id.startswith("app-one-")
    assert (first.generation, partitions(first), first.session_timeout_ms) == (
        1,
        [0, 1, 2, 3],
        10_000,
    )
    again = await env.groups.join("g", first.member_id, ["t"])
    assert again == first
    described = await env.groups.describe("g")
    assert (described.state, described.generation) == (GroupState.STABLE, 1)
    assert env.groups.heartbeat("g", first.member_id, 1).rebalance is False


async def test_two_members_split_the_partitions(env: Env) -> None:
    a, b = await stable_pair(env)
    assert partitions(a) == [0, 1]  # sticky: a kept the first half it already had
    assert partitions(b) == [2, 3]
    assert a.member_id != b.member_id
    assert env.groups.heartbeat("g", a.member_id, 2).rebalance is False


async def test_a_joining_member_makes_the_others_rebalance_and_they_may_commit_meanwhile(
    env: Env,
) -> None:
    await env.topic("t", 4)
    a = await env.groups.join("g", "", ["t"])
    joining_b = await pending_join(env, "", ["t"])
    beat = env.groups.heartbeat("g", a.member_id, 1)
    assert (beat.rebalance, beat.generation) == (True, 1)
    assert (await env.groups.describe("g")).state is GroupState.PREPARING_REBALANCE
    # generation 1 is still the current one until the round completes
    await env.groups.commit_offsets("g", a.member_id, 1, {("t", 3): 7})
    a2 = await env.groups.join("g", a.member_id, ["t"])
    b = await joining_b
    assert a2.generation == b.generation == 2
    assert await env.groups.fetch_offsets("g") == {("t", 3): 7}


async def test_a_stale_generation_commit_is_refused(env: Env) -> None:
    a, _ = await stable_pair(env)
    with pytest.raises(StaleGenerationError, match=r"generation 1 .* generation 2") as caught:
        await env.groups.commit_offsets("g", a.member_id, 1, {("t", 0): 5})
    assert caught.value.status == "FAILED_PRECONDITION"
    assert await env.groups.fetch_offsets("g") == {}
    heartbeat = env.groups.heartbeat("g", a.member_id, 1)
    assert (heartbeat.rebalance, heartbeat.generation) == (True, 2)


async def test_a_member_that_changes_topics_triggers_a_rebalance(env: Env) -> None:
    await env.topic("t", 2)
    await env.topic("u", 2)
    a, b = await stable_pair_on(env, "t")
    joining_a = await pending_join(env, a.member_id, ["t", "u"])
    assert not joining_a.done()
    assert env.groups.heartbeat("g", b.member_id, b.generation).rebalance is True
    b2 = await env.groups.join("g", b.member_id, ["t"])
    a2 = await joining_a
    assert a2.generation == b2.generation == 3
    assert a2.by_topic()["u"] == [0, 1]
    assert len(partitions(a2)) == len(partitions(b2)) == 1


async def stable_pair_on(env: Env, topic: str) -> tuple[JoinResult, JoinResult]:
    a = await env.groups.join("g", "", [topic])
    joining_b = await pending_join(env, "", [topic])
    a = await env.groups.join("g", a.member_id, [topic])
    return a, await joining_b


async def test_a_leaving_member_hands_over_only_its_partitions(env: Env) -> None:
    a, b = await stable_pair(env)
    env.groups.leave("g", b.member_id)
    assert env.groups.heartbeat("g", a.member_id, 2).rebalance is True
    a2 = await env.groups.join("g", a.member_id, ["t"])
    assert (a2.generation, partitions(a2)) == (3, [0, 1, 2, 3])
    with pytest.raises(UnknownMemberError) as caught:
        env.groups.heartbeat("g", b.member_id, 2)
    assert caught.value.status == "NOT_FOUND"


async def test_the_last_member_leaving_empties_the_group(env: Env) -> None:
    await env.topic("t", 1)
    a = await env.groups.join("g", "", ["t"])
    await env.groups.commit_offsets("g", a.member_id, 1, {("t", 0): 3})
    env.groups.leave("g", a.member_id)
    described = await env.groups.describe("g")
    assert (described.state, described.generation, described.members) == (
        GroupState.EMPTY,
        2,
        [],
    )
    # with no live members a tool may commit
    await env.groups.commit_offsets("g", "", -1, {("t", 0): 0})
    assert await env.groups.fetch_offsets("g") == {("t", 0): 0}


async def test_session_expiry_moves_the_partitions(env: Env) -> None:
    a, b = await stable_pair(env)
    env.clock.advance(6)
    env.groups.heartbeat("g", a.member_id, 2)
    env.clock.advance(4.5)  # b silent for 10.5 s > 10 s; a heard from 4.5 s ago
    env.groups.expire()
    assert env.groups.heartbeat("g", a.member_id, 2).rebalance is True
    with pytest.raises(UnknownMemberError, match="join again with an empty member_id"):
        env.groups.heartbeat("g", b.member_id, 2)
    a2 = await env.groups.join("g", a.member_id, ["t"])
    assert (a2.generation, partitions(a2)) == (3, [0, 1, 2, 3])


async def test_commits_and_polls_count_as_liveness(env: Env) -> None:
    a, b = await stable_pair(env)
    for _ in range(3):
        env.clock.advance(6)
        env.groups.heartbeat("g", a.member_id, 2)
        await env.groups.commit_offsets("g", b.member_id, 2, {("t", 2): 1})
        env.groups.expire()
    assert (await env.groups.describe("g")).state is GroupState.STABLE


async def test_members_that_do_not_rejoin_are_dropped_at_the_rebalance_deadline(
    env: Env,
) -> None:
    a, b = await stable_pair(env)
    joining_c = await pending_join(env, "", ["t"])
    joining_a = await pending_join(env, a.member_id, ["t"])
    env.clock.advance(6)
    assert env.groups.heartbeat("g", b.member_id, 2).rebalance is True  # alive, but no re-join
    env.groups.expire()
    assert not joining_a.done()
    env.clock.advance(4.5)  # 10.5 s since the round started; b's session is only 4.5 s old
    env.groups.expire()
    a2, c = await joining_a, await joining_c
    assert a2.generation == c.generation == 3
    assert sorted(partitions(a2) + partitions(c)) == [0, 1, 2, 3]
    with pytest.raises(UnknownMemberError):
        env.groups.heartbeat("g", b.member_id, 2)


async def test_a_member_waiting_in_join_is_not_expired_by_its_session(env: Env) -> None:
    a, b = await stable_pair(env)
    joining_c = await pending_join(env, "", ["t"])
    joining_a = await pending_join(env, a.member_id, ["t"], session_timeout_ms=1000)
    env.clock.advance(2)
    env.groups.heartbeat("g", b.member_id, 2)
    env.groups.expire()
    b2 = await env.groups.join("g", b.member_id, ["t"])
    assert (await joining_a).generation == b2.generation == (await joining_c).generation == 3


async def test_a_caller_that_gives_up_stays_joined_for_the_round(env: Env) -> None:
    a, b = await stable_pair(env)
    joining_c = await pending_join(env, "", ["t"])
    joining_a = await pending_join(env, a.member_id, ["t"])
    joining_a.cancel()
    b2 = await env.groups.join("g", b.member_id, ["t"])
    assert (b2.generation, partitions(b2)) == (3, [2])
    assert partitions(await joining_c) == [3]
    # a is still a member of generation 3 and learns its assignment by joining again
    assert env.groups.heartbeat("g", a.member_id, 3).rebalance is False
    a2 = await env.groups.join("g", a.member_id, ["t"])
    assert (a2.generation, partitions(a2)) == (3, [0, 1])


# --- errors -------------------------------------------------------------------


async def test_unknown_members_are_not_found(env: Env) -> None:
    await env.topic("t", 1)
    calls = [
        lambda: env.groups.join("g", "ghost", ["t"]),
        lambda: env.groups.commit_offsets("g", "ghost", 1, {("t", 0): 1}),
        lambda: env.groups.poll("t", "g", "ghost", 10),
    ]
    for call in calls:
        with pytest.raises(UnknownMemberError, match=r"'ghost'.*join again") as caught:
            await call()
        assert caught.value.status == "NOT_FOUND"
    with pytest.raises(UnknownMemberError):
        env.groups.heartbeat("g", "ghost", 1)
    with pytest.raises(UnknownMemberError):
        env.groups.leave("g", "ghost")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"group": ""}, "group"),
        ({"group": "a group"}, "group"),
        ({"group": ".."}, "group"),
        ({"topics": []}, "topics"),
        ({"topics": ["ok", "not/ok"]}, r"topics\[1\]"),
        ({"session_timeout_ms": 999}, "session_timeout_ms"),
        ({"session_timeout_ms": 300_001}, "session_timeout_ms"),
        ({"session_timeout_ms": -1}, "session_timeout_ms"),
        ({"rebalance_timeout_ms": -5}, "rebalance_timeout_ms"),
        ({"client_id": "x" * 256}, "client_id"),
    ],
)
async def test_join_names_the_bad_field(env: Env, kwargs: dict, field: str) -> None:
    args = {"group": "g", "member_id": "", "topics": ["t"], **kwargs}
    with pytest.raises(InvalidRequestError, match=f"^{field}") as caught:
        await env.groups.join(**args)
    assert caught.value.status == "INVALID_ARGUMENT"


async def test_session_timeout_bounds_are_accepted(env: Env) -> None:
    await env.topic("t", 1)
    low = await env.groups.join("g1", "", ["t"], session_timeout_ms=1000)
    high = await env.groups.join("g2", "", ["t"], session_timeout_ms=300_000)
    assert (low.session_timeout_ms, high.session_timeout_ms) == (1000, 300_000)


async def test_commit_checks_offsets_topics_and_partitions(env: Env) -> None:
    await env.topic("t", 2)
    a = await env.groups.join("g", "", ["t"])
    with pytest.raises(InvalidRequestError, match="t/0 must be >= 0"):
        await env.groups.commit_offsets("g", a.member_id, 1, {("t", 0): -1})
    with pytest.raises(TopicNotFoundError, match="'nope'"):
        await env.groups.commit_offsets("g", a.member_id, 1, {("nope", 0): 1})
    with pytest.raises(PartitionNotFoundError, match=r"0\.\.1, not 2"):
        await env.groups.commit_offsets("g", a.member_id, 1, {("t", 0): 1, ("t", 2): 1})
    with pytest.raises(InvalidRequestError, match=r"^generation: must be -1"):
        await env.groups.commit_offsets("g", "", 1, {("t", 0): 1})
    with pytest.raises(GroupNotEmptyError, match="1 live member") as caught:
        await env.groups.commit_offsets("g", "", -1, {("t", 0): 1})
    assert caught.value.status == "FAILED_PRECONDITION"
    assert await env.groups.fetch_offsets("g") == {}


async def test_fetch_offsets_answers_minus_one_without_a_commit(env: Env) -> None:
    await env.topic("t", 3)
    await env.groups.commit_offsets("g", "", -1, {("t", 1): 4})
    assert await env.groups.fetch_offsets("g", {"t": [0, 1]}) == {("t", 0): -1, ("t", 1): 4}
    assert await env.groups.fetch_offsets("g", {"t": []}) == {
        ("t", 0): -1,
        ("t", 1): 4,
        ("t", 2): -1,
    }
    assert await env.groups.fetch_offsets("g") == {("t", 1): 4}
    with pytest.raises(PartitionNotFoundError):
        await env.groups.fetch_offsets("g", {"t": [3]})
    with pytest.raises(TopicNotFoundError):
        await env.groups.fetch_offsets("g", {"missing": [0]})


# --- topics that appear later -------------------------------------------------


async def test_subscribing_before_the_topic_exists_then_creating_it(env: Env) -> None:
    a = await env.groups.join("g", "", ["later"])
    assert (a.generation, a.assignment) == (1, frozenset())
    await env.topic("later", 3)
    assert env.groups.heartbeat("g", a.member_id, 1).rebalance is True
    a2 = await env.groups.join("g", a.member_id, ["later"])
    assert (a2.generation, partitions(a2, "later")) == (2, [0, 1, 2])
    await env.topic("unrelated", 1)
    assert env.groups.heartbeat("g", a.member_id, 2).rebalance is False
    await env.coordinator.delete_topic("later")
    assert env.groups.heartbeat("g", a.member_id, 2).rebalance is True
    a3 = await env.groups.join("g", a.member_id, ["later"])
    assert (a3.generation, a3.assignment) == (3, frozenset())


# --- persistence ----------------------------------------------------------------


async def test_committed_offsets_survive_a_coordinator_restart(tmp_path: Path) -> None:
    first = await make_env(tmp_path)
    await first.topic("t", 2)
    a = await first.groups.join("g", "", ["t"])
    await first.groups.commit_offsets("g", a.member_id, 1, {("t", 0): 11, ("t", 1): 22})
    await first.groups.stop()
    await first.coordinator.close()

    second = await make_env(tmp_path)
    try:
        assert await second.groups.fetch_offsets("g") == {("t", 0): 11, ("t", 1): 22}
        # membership is not persisted: the old member joins again
        with pytest.raises(UnknownMemberError):
            second.groups.heartbeat("g", a.member_id, 1)
        assert [s.group for s in await second.groups.list_groups()] == ["g"]
    finally:
        await second.groups.stop()
        await second.coordinator.close()


# --- describe and list --------------------------------------------------------


async def test_describe_shows_members_assignment_and_lag(env: Env) -> None:
    a, b = await stable_pair(env)
    env.logs.append("t", 0, *[b"x"] * 10)
    env.logs.append("t", 1, *[b"x"] * 5)
    env.logs.truncate_front("t", 1, 2)
    await env.groups.commit_offsets("g", a.member_id, 2, {("t", 0): 4})
    d = await env.groups.describe("g")
    assert (d.group, d.state, d.generation) == ("g", GroupState.STABLE, 2)
    assert [(m.member_id, sorted(m.assignment)) for m in d.members] == sorted(
        [(a.member_id, sorted(a.assignment)), (b.member_id, sorted(b.assignment))]
    )
    lag = {(o.topic, o.partition): (o.committed, o.log_end_offset, o.lag) for o in d.offsets}
    assert lag == {
        ("t", 0): (4, 10, 6),
        ("t", 1): (-1, 5, 3),  # no commit: log end - log start
        ("t", 2): (-1, 0, 0),
        ("t", 3): (-1, 0, 0),
    }


async def test_list_groups_has_live_groups_and_groups_with_offsets(env: Env) -> None:
    await env.topic("t", 1)
    a = await env.groups.join("live", "", ["t"])
    await env.groups.commit_offsets("tool-only", "", -1, {("t", 0): 1})
    gone = await env.groups.join("gone", "", ["t"])
    env.groups.leave("gone", gone.member_id)
    summaries = await env.groups.list_groups()
    assert [(s.group, s.state, s.generation, s.members) for s in summaries] == [
        ("live", GroupState.STABLE, 1, 1),
        ("tool-only", GroupState.EMPTY, 0, 0),
    ]
    with pytest.raises(GroupNotFoundError, match="no members and no committed offsets"):
        await env.groups.describe("gone")
    assert a.member_id


# --- the original Subscribe / Poll / Unsubscribe ------------------------------


async def test_poll_returns_records_then_nothing_new(env: Env) -> None:
    await env.topic("t", 2)
    env.logs.append("t", 0, b"a0", b"a1", b"a2")
    env.logs.append("t", 1, b"b0", b"b1")
    sub = await env.groups.subscribe("t", "g")
    assert (sub.generation, partitions(sub)) == (1, [0, 1])
    first = await env.groups.poll("t", "g", sub.member_id, 0)
    assert (first.rebalance, first.generation) == (False, 1)
    per_partition: dict[int, list[bytes]] = {}
    for r in first.records:
        per_partition.setdefault(r.partition, []).append(r.record.value)
    assert per_partition == {0: [b"a0", b"a1", b"a2"], 1: [b"b0", b"b1"]}
    assert await env.groups.fetch_offsets("g") == {("t", 0): 3, ("t", 1): 2}
    assert (await env.groups.poll("t", "g", sub.member_id, 0)).records == []
    env.logs.append("t", 1, b"b2")
    again = await env.groups.poll("t", "g", sub.member_id, 0)
    assert [(r.partition, r.record.offset, r.record.value) for r in again.records] == [
        (1, 2, b"b2")
    ]
    await env.groups.unsubscribe("t", "g", sub.member_id)
    with pytest.raises(UnknownMemberError):
        await env.groups.poll("t", "g", sub.member_id, 0)


async def test_poll_shares_max_records_fairly_across_partitions(env: Env) -> None:
    await env.topic("t", 3)
    for p in range(3):
        env.logs.append("t", p, *[b"v"] * 50)
    sub = await env.groups.subscribe("t", "g")
    counts = []
    for _ in range(3):
        polled = await env.groups.poll("t", "g", sub.member_id, 10)
        assert len(polled.records) == 10
        counts.append(sorted(r.partition for r in polled.records))
    # 3 each, the tenth goes to a different partition each time
    assert [sorted(set(c)) for c in counts] == [[0, 1, 2]] * 3
    extras = [max(set(c), key=c.count) for c in counts]
    assert sorted(extras) == [0, 1, 2]
    with pytest.raises(InvalidRequestError, match=r"^max_records"):
        await env.groups.poll("t", "g", sub.member_id, -1)


async def test_poll_starts_at_the_log_start_after_retention(env: Env) -> None:
    await env.topic("t", 1)
    env.logs.append("t", 0, *[b"v%d" % i for i in range(10)])
    await env.groups.commit_offsets("g", "", -1, {("t", 0): 2})
    env.logs.truncate_front("t", 0, 6)
    sub = await env.groups.subscribe("t", "g")
    polled = await env.groups.poll("t", "g", sub.member_id, 100)
    assert [r.record.offset for r in polled.records] == [6, 7, 8, 9]


async def test_poll_during_a_rebalance_rejoins_and_says_so(env: Env) -> None:
    await env.topic("t", 2)
    env.logs.append("t", 0, b"x")
    a = await env.groups.subscribe("t", "g")
    subscribing_b = asyncio.create_task(env.groups.subscribe("t", "g"))
    await asyncio.sleep(0)
    assert not subscribing_b.done()
    polled = await env.groups.poll("t", "g", a.member_id, 10)
    assert (polled.rebalance, polled.generation, polled.records) == (True, 2, [])
    b = await subscribing_b
    assert (b.generation, partitions(b)) == (2, [1])  # a keeps partition 0 (sticky)
    polled = await env.groups.poll("t", "g", a.member_id, 10)
    assert (polled.rebalance, polled.generation) == (False, 2)
    assert [(r.partition, r.record.value) for r in polled.records] == [(0, b"x")]


async def test_poll_of_a_topic_the_member_does_not_consume(env: Env) -> None:
    await env.topic("t", 1)
    sub = await env.groups.subscribe("t", "g")
    with pytest.raises(InvalidRequestError, match=r"^topic: .* not 'u'"):
        await env.groups.poll("u", "g", sub.member_id, 1)


# --- shutdown -------------------------------------------------------------------


async def test_stop_answers_pending_joins_unavailable(env: Env) -> None:
    a, _b = await stable_pair(env)
    joining_c = await pending_join(env, "", ["t"])
    await env.groups.stop()
    with pytest.raises(BrokerUnavailableError, match="shutting down") as caught:
        await joining_c
    assert caught.value.status == "UNAVAILABLE"
    with pytest.raises(BrokerUnavailableError):
        await env.groups.join("g", "", ["t"])
    with pytest.raises(BrokerUnavailableError):
        env.groups.heartbeat("g", a.member_id, 2)


async def test_the_background_task_runs_the_expiry_pass(tmp_path: Path) -> None:
    coordinator = LocalCoordinator(tmp_path)
    await coordinator.start(ME)
    clock = Clock()
    groups = GroupCoordinator(coordinator, MemoryLogs(), now=clock, check_interval_s=0.01)
    await groups.start()
    try:
        a = await groups.join("g", "", ["t"], session_timeout_ms=1000)
        clock.advance(1.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while [s.members for s in await groups.list_groups()] == [1]:
            assert loop.time() < deadline, "the expiry task never removed the member"
            await asyncio.sleep(0.01)
        with pytest.raises(UnknownMemberError):
            groups.heartbeat("g", a.member_id, 1)
    finally:
        await groups.stop()
        await coordinator.close()


async def test_concurrent_joins_of_one_member_share_the_answer(env: Env) -> None:
    a, b = await stable_pair(env)
    joining_c = await pending_join(env, "", ["t"])
    first = await pending_join(env, a.member_id, ["t"])
    second = await pending_join(env, a.member_id, ["t"])
    b2 = await env.groups.join("g", b.member_id, ["t"])
    assert await first == await second
    assert (await first).generation == b2.generation == (await joining_c).generation == 3
