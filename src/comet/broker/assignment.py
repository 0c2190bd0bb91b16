"""Server-side partition assignment for consumer groups: balanced, sticky, deterministic.

`assign` works topic by topic. For a topic with `n` partitions and `k`
subscribers every subscriber gets `n // k` partitions and `n % k` of them
one more, so counts differ by at most one among that topic's subscribers.

Stickiness: a member keeps as many of its previous partitions as its quota
allows, and the "one more" slots go first to members that previously held
more than `n // k` (each of them keeps one partition more that way). The
result keeps the largest number of previous owners any balanced assignment
can keep; in particular when one member joins only the partitions the
newcomer receives move, and when one member leaves only its partitions move.

Determinism: every choice is made in sorted order (members by id,
partitions by number, topics by name), never in dict or set order, so the
same input gives the same output. Ties for the extra slots go to members
with the fewest partitions so far over all topics, which keeps the total
load even when several topics have a remainder.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

TopicPartition = tuple[str, int]


def assign(
    members: Mapping[str, Set[str]],
    partitions: Mapping[str, int],
    previous: Mapping[str, Set[TopicPartition]],
) -> dict[str, set[TopicPartition]]:
    """Assign every partition of every subscribed topic to exactly one of its subscribers.

    `members` maps member id to the topics it subscribes; `partitions` maps
    topic to its partition count (topics missing here do not exist yet and
    get nothing); `previous` is the last assignment, used only to stay
    sticky (entries that are no longer valid are ignored).
    """
    result: dict[str, set[TopicPartition]] = {m: set() for m in members}
    load: dict[str, int] = dict.fromkeys(members, 0)
    subscribed = sorted({t for topics in members.values() for t in topics if t in partitions})
    for topic in subscribed:
        count = partitions[topic]
        subscribers = sorted(m for m, topics in members.items() if topic in topics)
        if count <= 0 or not subscribers:
            continue
        owned = _previous_owners(topic, count, subscribers, previous)
        quotas = _quotas(count, subscribers, owned, load)
        kept: set[int] = set()
        for member in subscribers:
            keep = owned[member][: quotas[member]]
            kept.update(keep)
            result[member].update((topic, p) for p in keep)
        free = iter(p for p in range(count) if p not in kept)
        for member in subscribers:
            missing = quotas[member] - len(owned[member][: quotas[member]])
            for _ in range(missing):
                result[member].add((topic, next(free)))
            load[member] += quotas[member]
    return result


def _previous_owners(
    topic: str, count: int, subscribers: list[str], previous: Mapping[str, Set[TopicPartition]]
) -> dict[str, list[int]]:
    """Each subscriber's still-valid previous partitions of `topic`, sorted.

    A partition claimed by two members (not a valid previous assignment)
    stays with the member whose id sorts first.
    """
    claimed: set[int] = set()
    owned: dict[str, list[int]] = {}
    for member in subscribers:
        mine = sorted(p for t, p in previous.get(member, ()) if t == topic and 0 <= p < count)
        owned[member] = [p for p in mine if p not in claimed]
        claimed.update(owned[member])
    return owned


def _quotas(
    count: int, subscribers: list[str], owned: Mapping[str, list[int]], load: Mapping[str, int]
) -> dict[str, int]:
    """How many partitions of the topic each subscriber gets (base or base + 1)."""
    base, extra = divmod(count, len(subscribers))
    # Members that held more than `base` before keep one more partition with an
    # extra slot, so they come first; then the least loaded; then by id.
    ranked = sorted(subscribers, key=lambda m: (len(owned[m]) <= base, load[m], m))
    extras = set(ranked[:extra])
    return {m: base + (m in extras) for m in subscribers}
