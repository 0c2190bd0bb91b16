"""assign(): every partition once, balanced per topic, deterministic, sticky."""

from __future__ import annotations

import random
from collections.abc import Mapping, Set

from hypothesis import given, settings
from hypothesis import strategies as st

from comet.broker.assignment import TopicPartition, assign

TOPICS = ["a", "b", "c", "d"]
MEMBER_IDS = [f"m{i}" for i in range(12)]

topic_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12), max_size=4)
# "zz" never exists: members may subscribe to topics that are not created yet
subscriptions = st.dictionaries(
    st.sampled_from(MEMBER_IDS),
    st.frozensets(st.sampled_from([*TOPICS, "zz"]), min_size=1),
    max_size=7,
)
garbage_previous = st.dictionaries(
    st.sampled_from(MEMBER_IDS),
    st.frozensets(st.tuples(st.sampled_from([*TOPICS, "zz"]), st.integers(-1, 15)), max_size=12),
    max_size=8,
)


def owners(result: Mapping[str, Set[TopicPartition]]) -> dict[TopicPartition, str]:
    out: dict[TopicPartition, str] = {}
    for member, tps in result.items():
        for tp in tps:
            assert tp not in out, f"{tp} assigned to {out[tp]} and {member}"
            out[tp] = member
    return out


def check_valid(
    members: Mapping[str, Set[str]],
    counts: Mapping[str, int],
    result: Mapping[str, Set[TopicPartition]],
) -> None:
    assert set(result) == set(members)
    owner = owners(result)
    expected = {
        (t, p)
        for t, n in counts.items()
        if any(t in topics for topics in members.values())
        for p in range(n)
    }
    assert set(owner) == expected
    for (topic, _), member in owner.items():
        assert topic in members[member]
    for topic, n in counts.items():
        subs = [m for m in members if topic in members[m]]
        sizes = [sum(1 for t, _ in result[m] if t == topic) for m in subs]
        if subs:
            assert max(sizes) - min(sizes) <= 1, (topic, n, sizes)
            assert sum(sizes) == n


@settings(max_examples=150)
@given(subscriptions, topic_counts, garbage_previous)
def test_every_partition_once_and_balanced(members, counts, previous):
    check_valid(members, counts, assign(members, counts, previous))


@settings(max_examples=100)
@given(subscriptions, topic_counts, garbage_previous, st.randoms(use_true_random=False))
def test_deterministic_whatever_the_dict_and_set_order(members, counts, previous, rnd):
    def shuffled(mapping: Mapping) -> dict:
        items = list(mapping.items())
        rnd.shuffle(items)
        return {
            k: set(rnd.sample(sorted(v), len(v))) if isinstance(v, Set) else v for k, v in items
        }

    first = assign(members, counts, previous)
    again = assign(shuffled(members), shuffled(counts), shuffled(previous))
    assert first == again


@settings(max_examples=100)
@given(subscriptions, topic_counts, garbage_previous)
def test_nothing_moves_when_nothing_changed(members, counts, previous):
    settled = assign(members, counts, previous)
    assert assign(members, counts, settled) == settled


@settings(max_examples=150)
@given(subscriptions, topic_counts, garbage_previous, st.frozensets(st.sampled_from(TOPICS)))
def test_a_newcomer_takes_only_what_it_needs(members, counts, previous, new_topics):
    before = assign(members, counts, previous)
    grown = {**members, "new": new_topics or frozenset({"a"})}
    after = assign(grown, counts, before)
    check_valid(grown, counts, after)
    for member in members:
        assert after[member] <= before[member], "an old member gained a partition"
    old_owner, new_owner = owners(before), owners(after)
    moved = {tp for tp, m in new_owner.items() if old_owner.get(tp) not in (None, m)}
    assert all(new_owner[tp] == "new" for tp in moved)
    # and it gets the smallest balanced share of each topic, no more
    for topic in grown["new"]:
        if topic in counts:
            subscribers = sum(1 for t in grown.values() if topic in t)
            mine = sum(1 for t, _ in after["new"] if t == topic)
            assert mine == counts[topic] // subscribers


@settings(max_examples=150)
@given(subscriptions, topic_counts, garbage_previous, st.data())
def test_a_leaver_releases_only_its_own_partitions(members, counts, previous, data):
    if not members:
        return
    before = assign(members, counts, previous)
    leaver = data.draw(st.sampled_from(sorted(members)))
    shrunk = {m: t for m, t in members.items() if m != leaver}
    after = assign(shrunk, counts, before)
    check_valid(shrunk, counts, after)
    for member in shrunk:
        assert before[member] <= after[member], "a remaining member lost a partition"


def test_two_members_split_four_partitions_in_ranges():
    result = assign({"m1": {"t"}, "m2": {"t"}}, {"t": 4}, {})
    assert result == {"m1": {("t", 0), ("t", 1)}, "m2": {("t", 2), ("t", 3)}}


def test_topics_that_do_not_exist_yet_get_nothing():
    assert assign({"m1": {"later"}}, {}, {}) == {"m1": set()}
    assert assign({"m1": {"later"}}, {"later": 2}, {"m1": set()}) == {
        "m1": {("later", 0), ("later", 1)}
    }


def test_remainders_of_several_topics_spread_over_members():
    members = {f"m{i}": {"a", "b", "c"} for i in range(3)}
    result = assign(members, {"a": 4, "b": 4, "c": 4}, {})
    assert sorted(len(v) for v in result.values()) == [4, 4, 4]


def test_large_group_is_fast_enough():
    rnd = random.Random(7)
    members = {f"m{i:03d}": {"a", "b"} for i in range(100)}
    counts = {"a": 1000, "b": 333}
    first = assign(members, counts, {})
    del members[f"m{rnd.randrange(100):03d}"]
    second = assign(members, counts, first)
    check_valid(members, counts, second)
