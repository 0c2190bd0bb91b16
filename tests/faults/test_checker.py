"""The checker on hand-made histories: it passes a clean one and names every anomaly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults.checker import CheckResult, check
from tests.faults.history import (
    History,
    decode_value,
    encode_value,
    read_history,
    replica_digest,
)
from tests.faults.report import render


class Story:
    """Builds a history: three records of key k on partition 0, acked, read and consumed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = [{"type": "start", "t": 0.0, "seed": 42}]
        self.final: list[list[Any]] = []

    def add(self, event_type: str, t: float = 1.0, **fields: Any) -> Story:
        """Append one event."""
        self.events.append({"type": event_type, "t": t, **fields})
        return self

    def record(self, rid: str, seq: int, offset: int | None, acked: bool = True) -> Story:
        """Send `rid` (key k, sequence `seq`); ack it at `offset` if acked, else fail it."""
        self.add("send", id=rid, k="k", s=seq)
        if acked:
            assert offset is not None
            self.add("ack", t=1.0 + seq, id=rid, p=0, o=offset)
        else:
            self.add("fail", id=rid, error="RequestTimeoutError: slow")
        return self

    def stored(self, *rows: tuple[int, str, int]) -> Story:
        """The final log of partition 0: (offset, id, seq) rows."""
        self.final = [[o, encode_value(rid, "k", seq).decode()] for o, rid, seq in rows]
        return self

    def write(self, path: Path, consumed: bool = True) -> Path:
        """Write the history, with a converged cluster, the final read and (if so) a consumer."""
        events = list(self.events)
        hw = self.final[-1][0] + 1 if self.final else 0
        events.append({"type": "converged", "t": 90.0, "ok": True, "detail": "whole"})
        events.append(
            {"type": "final", "t": 91.0, "p": 0, "start": 0, "hw": hw, "recs": self.final}
        )
        if consumed and self.final:
            events.append({"type": "consume", "t": 92.0, "c": 0, "p": 0, "recs": self.final})
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        return path


def clean() -> Story:
    """Three records acknowledged, stored where acknowledged, and consumed."""
    return (
        Story()
        .record("a", 0, 0)
        .record("b", 1, 1)
        .record("c", 2, 2)
        .stored((0, "a", 0), (1, "b", 1), (2, "c", 2))
    )


def test_a_clean_history_passes(tmp_path: Path) -> None:
    result = check(clean().write(tmp_path / "h.jsonl"))
    assert result.ok, render(result)
    assert result.counts["acknowledged"] == 3
    assert result.counts["lost"] == 0
    assert "PASS" in render(result)


def test_a_missing_acknowledged_record_is_lost(tmp_path: Path) -> None:
    story = Story().record("a", 0, 0).record("b", 1, 1).stored((0, "a", 0))
    result = check(story.write(tmp_path / "h.jsonl"))
    assert not result.ok
    assert result.counts["lost"] == 1
    assert result.counts["unseen_by_consumers"] == 1
    text = render(result)
    assert "FAIL" in text and "seed 42" in text and str(tmp_path / "h.jsonl") in text


def test_a_record_stored_twice_is_duplicated_and_a_gap_is_a_hole(tmp_path: Path) -> None:
    story = Story().record("a", 0, 0).stored((0, "a", 0), (2, "a", 0))
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.counts["duplicated"] == 1
    assert result.counts["holes"] == 1


def test_an_acknowledged_record_elsewhere_is_misplaced(tmp_path: Path) -> None:
    story = Story().record("x", 0, 0).record("a", 1, 1).stored((0, "a", 1), (1, "x", 0))
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.counts["misplaced"] == 2
    assert result.counts["reordered"] == 1  # seq 1 stored before seq 0


def test_a_failed_send_may_appear_once_but_not_twice(tmp_path: Path) -> None:
    once = Story().record("a", 0, 0).record("f", 1, None, acked=False)
    once.stored((0, "a", 0), (1, "f", 1))
    result = check(once.write(tmp_path / "once.jsonl"))
    assert result.ok, render(result)
    assert result.counts["unacked_present"] == 1
    twice = Story().record("f", 0, None, acked=False).stored((0, "f", 0), (1, "f", 0))
    assert check(twice.write(tmp_path / "twice.jsonl")).counts["unacked_duplicated"] == 1


def test_unknown_values_unresolved_sends_and_unconverged_runs_fail(tmp_path: Path) -> None:
    story = clean()
    story.final.append([3, "never-sent"])
    story.add("send", id="d", k="k", s=3)  # neither acked nor failed
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.counts["phantom"] == 1
    assert result.counts["unresolved"] == 1
    path = tmp_path / "unconverged.jsonl"
    lines = clean().write(path).read_text().replace('"ok": true', '"ok": false')
    path.write_text(lines)
    assert not check(path).ok


def test_committed_offsets_must_not_go_back_nor_past_the_end(tmp_path: Path) -> None:
    story = clean().add("committed", t=2.0, p=0, o=2).add("committed", t=3.0, p=0, o=1)
    story.add("committed", t=4.0, p=0, o=9)
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.counts["commit_regressed"] == 1
    assert result.counts["commit_past_end"] == 1


def test_consumers_must_see_every_acked_record_and_nothing_truncated(tmp_path: Path) -> None:
    unseen = check(clean().write(tmp_path / "unseen.jsonl", consumed=False))
    assert unseen.counts["unseen_by_consumers"] == 3
    story = clean().add("consume", t=1.5, c=1, p=0, recs=[[2, "z|k|9"]])
    assert check(story.write(tmp_path / "dirty.jsonl")).counts["dirty_read"] == 1


def test_unavailability_is_the_longest_ack_gap_charged_to_the_fault_before_it(
    tmp_path: Path,
) -> None:
    story = Story()
    story.add("fault", t=1.9, id=1, kind="kill", target="b0", detail={})
    story.add("heal", t=5.5, id=1, kind="kill", ok=True, error="")
    for i, t in enumerate([1.0, 2.0, 6.5, 7.0]):
        story.add("send", t=t, id=f"r{i}", k="k", s=i).add("ack", t=t, id=f"r{i}", p=0, o=i)
    story.stored(*[(i, f"r{i}", i) for i in range(4)])
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.ok, render(result)
    assert result.unavailability == {"kill": 4.5, "none": 1.0}
    assert result.worst_gap["fault"] == "kill"
    assert result.recovery == {"kill": 1.0}  # acks resumed 1 s after the restart
    assert result.faults == {"kill": 1}


def test_history_round_trips_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl")
    history.record("send", id="a", k="k", s=0)
    history.close()
    with open(tmp_path / "h.jsonl", "a") as f:
        f.write('{"type": "ack", "id')
    events = list(read_history(tmp_path / "h.jsonl"))
    assert [e["type"] for e in events] == ["send"]
    assert decode_value(encode_value("p0.1", "p0k3", 7).decode()) == ("p0.1", "p0k3", 7)
    assert decode_value("junk") is None


@pytest.mark.parametrize("kind", CheckResult.ANOMALY_KINDS)
def test_every_anomaly_kind_fails_the_check(kind: str) -> None:
    result = CheckResult(converged=True, counts={"acknowledged": 1})
    assert result.ok
    result.flag(kind, "example")
    assert not result.ok


def test_a_replica_holding_other_records_than_the_leader_served_diverged(tmp_path: Path) -> None:
    story = clean()
    same = replica_digest([(o, v) for o, v in story.final])
    story.add("replica", t=95.0, b="b1", p=0, end=3, count=3, digest=same)
    story.add("replica", t=95.0, b="b2", p=0, end=3, count=2, digest="0" * 64)
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.counts["replica_diverged"] == 1
    assert result.counts["replicas_compared"] == 2
    assert "b2" in result.anomalies["replica_diverged"][0]


def test_recovery_is_not_charged_to_a_heal_another_fault_followed_at_once(tmp_path: Path) -> None:
    story = Story()
    story.add("fault", t=1.9, id=1, kind="peer-cut", target="b0", detail={})
    story.add("heal", t=3.0, id=1, kind="peer-cut", ok=True, error="")
    story.add("fault", t=3.5, id=2, kind="pause", target="b0", detail={})
    story.add("heal", t=6.0, id=2, kind="pause", ok=True, error="")
    for i, t in enumerate([1.0, 1.5, 6.4]):
        story.add("send", t=t, id=f"r{i}", k="k", s=i).add("ack", t=t, id=f"r{i}", p=0, o=i)
    story.stored(*[(i, f"r{i}", i) for i in range(3)])
    result = check(story.write(tmp_path / "h.jsonl"))
    assert result.recovery == {"pause": 0.4}
