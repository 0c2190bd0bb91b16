"""placement.place: distinct replicas, balanced leaders and replicas, load-aware, deterministic."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comet.cluster import CoordinatorError
from comet.cluster.placement import NotEnoughBrokersError, place

broker_sets = st.lists(
    st.text("abcdefgh0123456789", min_size=1, max_size=4), min_size=1, max_size=12, unique=True
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, int, int, list[str], dict[str, int]]:
    brokers = draw(broker_sets)
    rf = draw(st.integers(1, len(brokers)))
    partitions = draw(st.integers(1, 120))
    load = draw(st.dictionaries(st.sampled_from(brokers), st.integers(0, 1000)))
    topic = draw(st.text("abcxyz-._0123", min_size=1, max_size=20))
    return topic, partitions, rf, brokers, load


def spread(counts: Counter[str], brokers: list[str]) -> int:
    values = [counts[b] for b in brokers]
    return max(values) - min(values)


@settings(max_examples=300, deadline=None)
@given(requests())
def test_replicas_are_distinct_and_balanced(
    request: tuple[str, int, int, list[str], dict[str, int]],
) -> None:
    topic, partitions, rf, brokers, load = request
    out = place(topic, partitions, rf, brokers, load)
    assert len(out) == partitions
    for replicas in out:
        assert len(replicas) == rf
        assert len(set(replicas)) == rf
        assert set(replicas) <= set(brokers)
    leaders = Counter(r[0] for r in out)
    held = Counter(b for r in out for b in r)
    assert spread(leaders, brokers) <= 1, "leaders unbalanced"
    assert spread(held, brokers) <= 1, "replicas unbalanced"


@settings(max_examples=100, deadline=None)
@given(requests())
def test_the_same_inputs_give_the_same_answer(
    request: tuple[str, int, int, list[str], dict[str, int]],
) -> None:
    topic, partitions, rf, brokers, load = request
    assert place(topic, partitions, rf, brokers, load) == place(
        topic, partitions, rf, list(reversed(brokers)), dict(load)
    )


@settings(max_examples=100, deadline=None)
@given(requests())
def test_the_least_loaded_broker_leads_first_and_is_never_shorted(
    request: tuple[str, int, int, list[str], dict[str, int]],
) -> None:
    topic, partitions, rf, brokers, load = request
    newcomer = "new-broker"
    heavy = {b: load.get(b, 0) + 1 for b in brokers}
    out = place(topic, partitions, rf, [*brokers, newcomer], heavy)
    assert out[0][0] == newcomer
    held = Counter(b for r in out for b in r)
    assert held[newcomer] == max(held.values())


def test_a_broker_that_joined_later_takes_replicas_of_new_topics() -> None:
    # b1..b3 already hold 100 replicas each; b4 just joined
    out = place("fresh", 3, 2, ["b1", "b2", "b3", "b4"], {"b1": 100, "b2": 100, "b3": 100})
    held = Counter(b for r in out for b in r)
    assert held["b4"] == 2
    assert out[0][0] == "b4"


def test_without_load_topics_start_on_different_brokers() -> None:
    brokers = ["b1", "b2", "b3", "b4", "b5"]
    first_leaders = {place(f"topic-{i}", 1, 1, brokers)[0][0] for i in range(30)}
    assert len(first_leaders) > 1


def test_a_dead_brokers_followers_are_spread() -> None:
    out = place("t", 12, 2, ["b1", "b2", "b3", "b4"])
    followers_of_b1 = {r[1] for r in out if r[0] == "b1"}
    assert len(followers_of_b1) == 3


def test_too_few_brokers_is_a_clear_coordinator_error() -> None:
    with pytest.raises(NotEnoughBrokersError, match=r"needs 3 replicas but only 2 broker\(s\)"):
        place("t", 1, 3, ["b1", "b2"])
    assert issubclass(NotEnoughBrokersError, CoordinatorError)
    with pytest.raises(NotEnoughBrokersError, match="none"):
        place("t", 1, 1, [])


@pytest.mark.parametrize(("partitions", "rf"), [(0, 1), (1, 0)])
def test_nonsense_counts_are_value_errors(partitions: int, rf: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        place("t", partitions, rf, ["b1"])
