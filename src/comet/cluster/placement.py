"""Replica placement for a new topic: which brokers hold each partition.

`place` is a pure function. Its answer, for every partition, is a tuple of
broker ids; the first is the preferred leader. Invariants (checked by
property tests):

- the replicas of one partition are distinct brokers, and there are exactly
  `replication_factor` of them;
- leaders are balanced: every broker leads floor(P/B) or ceil(P/B) of the
  topic's P partitions (B = number of brokers);
- replicas are spread evenly: every broker holds floor(P*RF/B) or
  ceil(P*RF/B) of the topic's replicas;
- the least loaded brokers (by `existing_load`, the replicas they already
  hold) come first: they lead the first partitions and take the odd
  replicas, so a broker that joined later takes its share of new topics and
  a little more; equal loads are ordered by a rotation of the broker list
  derived from the topic name, so topics in an empty cluster do not all
  start on the same broker;
- the same inputs always give the same answer (no randomness, no `hash()`).

How: leaders go round-robin over that order. Each broker's replica total is
fixed up front (the even split, odd ones to the front of the order); what
is left after its leaderships is its follower quota. Followers are then
chosen partition by partition, most urgent quota first (quota minus the
partitions still ahead that the broker does not lead: a broker that would
otherwise run out of partitions to fill its quota goes first), then the
broker least often paired with this leader, so a dead broker's leaderships
spread over several brokers. Existing replicas are never moved:
rebalancing is a separate operation.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

from comet.cluster.coordinator import CoordinatorError


class NotEnoughBrokersError(CoordinatorError):
    """A topic asks for more replicas than there are live brokers to hold them."""


def place(
    topic: str,
    partitions: int,
    replication_factor: int,
    brokers: Sequence[str],
    existing_load: Mapping[str, int] | None = None,
) -> list[tuple[str, ...]]:
    """Replica lists (preferred leader first) for each partition of a new topic."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be >= 1, got {replication_factor}")
    ordered = sorted(set(brokers))
    if replication_factor > len(ordered):
        raise NotEnoughBrokersError(
            f"topic {topic!r} needs {replication_factor} replicas but only {len(ordered)} "
            f"broker(s) are live ({', '.join(ordered) or 'none'}); lower the replication "
            "factor or start more brokers"
        )
    load = existing_load or {}
    start = zlib.crc32(topic.encode()) % len(ordered)
    rotation = {b: (i - start) % len(ordered) for i, b in enumerate(ordered)}
    order = sorted(ordered, key=lambda b: (load.get(b, 0), rotation[b]))
    rank = {b: i for i, b in enumerate(order)}
    leaders = [order[p % len(order)] for p in range(partitions)]
    led = Counter(leaders)
    total, odd = divmod(partitions * replication_factor, len(order))
    quota = {b: total + (rank[b] < odd) - led[b] for b in order}
    ahead = {b: partitions - led[b] for b in order}
    pairs: Counter[tuple[str, str]] = Counter()
    out: list[tuple[str, ...]] = []
    for leader in leaders:
        for b in order:
            if b != leader:
                ahead[b] -= 1
        chosen = [leader]
        while len(chosen) < replication_factor:
            follower = min(
                (b for b in order if b not in chosen and quota[b] > 0),
                key=lambda b: (ahead[b] - quota[b], pairs[leader, b], rank[b]),
            )
            quota[follower] -= 1
            pairs[leader, follower] += 1
            chosen.append(follower)
        out.append(tuple(chosen))
    return out
