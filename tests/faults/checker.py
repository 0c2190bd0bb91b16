"""The checker: what a history says about the cluster's guarantees.

It reads only the history file (`tests.faults.history`) and checks, against
the final full read after healing:

- every acknowledged record is present exactly once, in the partition and
  at the offset its acknowledgement gave (else lost, duplicated, misplaced);
- each partition's offsets rise by one from the log start: no holes, and
  nothing there that was never sent (phantoms);
- per key, acknowledged records keep their send order (else reordered);
- a record whose send failed or never resolved appears at most once;
- the group's committed offsets never go backwards, nor past the log end;
- consumers saw every acknowledged record, and only what the final log
  holds at that offset (a record read and later truncated is a dirty read);
- every replica holds the same records below the high watermark as the
  leader served.

Unavailability: per partition, the gaps between consecutive
acknowledgements; each gap is charged to the fault last injected before it
began (give or take ATTRIBUTION_SLACK_S; "none" before the first fault).
Recovery: how long after a fault was healed a partition that had stopped
acknowledging did so again, when that was before the next fault began
(with overlapping faults, an upper bound).
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.history import decode_value, read_history, replica_digest

EXAMPLES = 5  # anomalies kept per kind, for the report
# A gap that a fault causes starts at the last acknowledgement before it, up to an
# acknowledgement interval earlier: charge a gap to the fault injected by its start + this.
ATTRIBUTION_SLACK_S = 0.5


@dataclass
class CheckResult:
    """Counts, anomalies and unavailability of one run."""

    seed: int | None = None
    history_path: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, list[str]] = field(default_factory=dict)
    unavailability: dict[str, float] = field(default_factory=dict)
    recovery: dict[str, float] = field(default_factory=dict)
    worst_gap: dict[str, Any] = field(default_factory=dict)
    converged: bool = False
    convergence_detail: str = ""

    ANOMALY_KINDS = (
        "lost",
        "duplicated",
        "misplaced",
        "reordered",
        "phantom",
        "holes",
        "unacked_duplicated",
        "unresolved",
        "commit_regressed",
        "commit_past_end",
        "dirty_read",
        "unseen_by_consumers",
        "replica_diverged",
    )

    @property
    def ok(self) -> bool:
        """True when the history shows no anomaly and the cluster healed."""
        return (
            self.converged
            and self.counts.get("acknowledged", 0) > 0
            and not any(self.counts.get(kind, 0) for kind in self.ANOMALY_KINDS)
        )

    def flag(self, kind: str, example: str) -> None:
        """Count one anomaly of `kind` and keep the first few examples."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.anomalies.setdefault(kind, [])
        if len(examples) < EXAMPLES:
            examples.append(example)


class _Run:
    """The history, indexed."""

    def __init__(self) -> None:
        self.start: dict[str, Any] = {}
        self.sends: dict[str, tuple[str, int]] = {}  # id -> (key, seq)
        self.acks: dict[str, tuple[int, int, float]] = {}  # id -> (partition, offset, t)
        self.fails: set[str] = set()
        self.refused = 0
        self.faults: list[tuple[float, int, str]] = []  # (t, id, kind)
        self.heals: list[tuple[float, str]] = []  # (t, kind)
        self.final: dict[int, list[tuple[int, str]]] = {}
        self.final_hw: dict[int, int] = {}
        self.final_start: dict[int, int] = {}
        self.consumed: list[tuple[int, int, str]] = []
        self.committed: dict[int, list[tuple[float, int]]] = defaultdict(list)
        self.converged: dict[str, Any] = {}
        self.replicas: list[dict[str, Any]] = []

    def add(self, e: dict[str, Any]) -> None:
        """Index one history event."""
        kind = e["type"]
        if kind == "send":
            self.sends[e["id"]] = (e["k"], e["s"])
        elif kind == "ack":
            self.acks[e["id"]] = (e["p"], e["o"], e["t"])
        elif kind == "fail":
            self.fails.add(e["id"])
        elif kind == "refused":
            self.refused += 1
        elif kind == "consume":
            self.consumed.extend((e["p"], o, v) for o, v in e["recs"])
        elif kind == "committed":
            self.committed[e["p"]].append((e["t"], e["o"]))
        elif kind == "heal":
            self.heals.append((e["t"], e["kind"]))
        elif kind == "fault":
            self.faults.append((e["t"], e["id"], e["kind"]))
        elif kind == "final":
            self.final[e["p"]] = [(o, v) for o, v in e["recs"]]
            self.final_hw[e["p"]] = e["hw"]
            self.final_start[e["p"]] = e.get("start", 0)
        elif kind == "start":
            self.start = e
        elif kind == "converged":
            self.converged = e
        elif kind == "replica":
            self.replicas.append(e)


def check(path: Path) -> CheckResult:
    """Check the history at `path`; see the module docstring."""
    run = _Run()
    for event in read_history(path):
        run.add(event)
    result = CheckResult(seed=run.start.get("seed"), history_path=str(path))
    result.converged = bool(run.converged.get("ok"))
    result.convergence_detail = str(run.converged.get("detail", "no convergence recorded"))
    for _, _, kind in run.faults:
        result.faults[kind] = result.faults.get(kind, 0) + 1
    c = result.counts
    c.update(
        sent=len(run.sends),
        acknowledged=len(run.acks),
        failed=len(run.fails),
        refused=run.refused,
    )
    for kind in CheckResult.ANOMALY_KINDS:
        c.setdefault(kind, 0)
    located = _check_final_log(run, result)
    _check_acknowledged(run, result, located)
    _check_order(run, result, located)
    _check_commits(run, result)
    _check_consumers(run, result)
    _check_replicas(run, result)
    _unavailability(run, result)
    return result


def _check_final_log(run: _Run, result: CheckResult) -> dict[str, list[tuple[int, int]]]:
    """Offsets contiguous, values known; returns id -> [(partition, offset), ...]."""
    located: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for partition, records in sorted(run.final.items()):
        expected = run.final_start.get(partition, 0)
        for offset, value in records:
            if offset != expected:
                result.flag("holes", f"p{partition}: offset {offset} follows {expected - 1}")
            expected = offset + 1
            decoded = decode_value(value)
            if decoded is None or decoded[0] not in run.sends:
                result.flag("phantom", f"p{partition}@{offset}: {value!r} was never sent")
                continue
            located[decoded[0]].append((partition, offset))
        hw = run.final_hw.get(partition, expected)
        if expected != hw:
            result.flag("holes", f"p{partition}: read ended at {expected}, high watermark {hw}")
    result.counts["final_records"] = sum(len(r) for r in run.final.values())
    return located


def _check_acknowledged(
    run: _Run, result: CheckResult, located: dict[str, list[tuple[int, int]]]
) -> None:
    unacked_present = 0
    for record_id in run.sends:
        places = located.get(record_id, [])
        ack = run.acks.get(record_id)
        if ack is None:
            if record_id not in run.fails:
                result.flag("unresolved", f"{record_id}: neither acknowledged nor failed")
            if places:
                unacked_present += 1
            if len(places) > 1:
                result.flag("unacked_duplicated", f"{record_id} (not acked) at {places}")
            continue
        partition, offset, _ = ack
        if not places:
            result.flag("lost", f"{record_id} acked at p{partition}@{offset}, not in the log")
        elif len(places) > 1:
            result.flag("duplicated", f"{record_id} acked at p{partition}@{offset}, at {places}")
        elif places[0] != (partition, offset):
            result.flag("misplaced", f"{record_id} acked at p{partition}@{offset}, at {places[0]}")
    result.counts["unacked_present"] = unacked_present


def _check_order(run: _Run, result: CheckResult, located: dict[str, list[tuple[int, int]]]) -> None:
    by_key: dict[str, list[tuple[int, int, str]]] = defaultdict(list)  # key -> (seq, offset, id)
    for record_id in run.acks:
        places = located.get(record_id)
        if places:
            key, seq = run.sends[record_id]
            by_key[key].append((seq, places[0][1], record_id))
    for key, records in by_key.items():
        records.sort()
        for (s1, o1, i1), (s2, o2, i2) in itertools.pairwise(records):
            if o2 <= o1:
                result.flag("reordered", f"key {key}: {i1} (seq {s1}) @{o1}, {i2} (seq {s2}) @{o2}")


def _check_commits(run: _Run, result: CheckResult) -> None:
    for partition, seen in sorted(run.committed.items()):
        for (t1, o1), (t2, o2) in itertools.pairwise(seen):
            if o2 < o1:
                result.flag(
                    "commit_regressed", f"p{partition}: {o1} at {t1:.1f}s, then {o2} at {t2:.1f}s"
                )
        hw = run.final_hw.get(partition)
        if seen and hw is not None and max(o for _, o in seen) > hw:
            result.flag("commit_past_end", f"p{partition}: committed {seen[-1][1]} > end {hw}")
    result.counts["commits_observed"] = sum(len(v) for v in run.committed.values())


def _check_consumers(run: _Run, result: CheckResult) -> None:
    final = {(p, o): v for p, recs in run.final.items() for o, v in recs}
    seen: set[tuple[int, int]] = set()
    for partition, offset, value in run.consumed:
        seen.add((partition, offset))
        stored = final.get((partition, offset))
        if stored != value:
            result.flag(
                "dirty_read",
                f"p{partition}@{offset}: consumer read {value!r}, the log holds {stored!r}",
            )
    for record_id, (partition, offset, _) in run.acks.items():
        if (partition, offset) not in seen:
            result.flag("unseen_by_consumers", f"{record_id} at p{partition}@{offset}")
    result.counts["consumed"] = len(run.consumed)
    result.counts["consumed_distinct"] = len(seen)


def _check_replicas(run: _Run, result: CheckResult) -> None:
    digests = {p: replica_digest(recs) for p, recs in run.final.items()}
    for replica in run.replicas:
        partition = replica["p"]
        expected = digests.get(partition)
        if expected is not None and replica["digest"] != expected:
            result.flag(
                "replica_diverged",
                f"p{partition} on {replica['b']}: {replica['count']} records below the high "
                f"watermark differ from the {len(run.final[partition])} the leader served",
            )
    result.counts["replicas_compared"] = len(run.replicas)


def _unavailability(run: _Run, result: CheckResult) -> None:
    by_partition: dict[int, list[float]] = defaultdict(list)
    for partition, _, t in run.acks.values():
        by_partition[partition].append(t)
    faults = sorted(run.faults)
    worst: dict[str, float] = {}
    for partition, times in by_partition.items():
        times.sort()
        for a, b in itertools.pairwise(times):
            gap = b - a
            owner = _owner(faults, a + ATTRIBUTION_SLACK_S)
            if gap > worst.get(owner, 0.0):
                worst[owner] = gap
            if gap > result.worst_gap.get("seconds", 0.0):
                result.worst_gap = {
                    "seconds": round(gap, 2),
                    "partition": partition,
                    "from_t": round(a, 2),
                    "fault": owner,
                }
    result.unavailability = {k: round(v, 2) for k, v in sorted(worst.items())}
    recovery: dict[str, float] = {}
    starts = [start for start, _, _ in faults]
    for healed_at, kind in run.heals:
        following = bisect.bisect_right(starts, healed_at)
        next_fault = starts[following] if following < len(starts) else float("inf")
        for times in by_partition.values():
            after = bisect.bisect_right(times, healed_at)
            # acks stopped before the heal and resumed after it, before another fault
            if 0 < after < len(times) and times[after] <= next_fault:
                recovery[kind] = max(recovery.get(kind, 0.0), times[after] - healed_at)
    result.recovery = {k: round(v, 2) for k, v in sorted(recovery.items())}


def _owner(faults: list[tuple[float, int, str]], t: float) -> str:
    """The kind of the last fault injected at or before `t` ("none" before any)."""
    index = bisect.bisect_right(faults, (t, float("inf"), ""))
    return faults[index - 1][2] if index else "none"
