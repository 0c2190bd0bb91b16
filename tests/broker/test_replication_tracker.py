"""ReplicaTracker: follower progress, ISR membership and the high watermark."""

from __future__ import annotations

from comet.broker.replication import ReplicaTracker


def tracker(isr=("a", "b", "c"), hw=0) -> ReplicaTracker:
    return ReplicaTracker("a", ("a", "b", "c"), isr, hw, now=0.0)


def test_hw_is_the_lowest_log_end_in_the_isr() -> None:
    t = tracker()
    assert not t.advance_high_watermark(10)  # b and c not heard from: HW stays
    t.record_fetch("b", 10, 10, now=1.0)
    t.record_fetch("c", 4, 10, now=1.0)
    assert t.advance_high_watermark(10)
    assert t.high_watermark == 4
    t.record_fetch("c", 10, 10, now=2.0)
    assert t.advance_high_watermark(12)
    assert t.high_watermark == 10  # b has 10, the leader 12


def test_hw_never_goes_down_and_ignores_followers_outside_the_isr() -> None:
    t = tracker(isr=("a", "b"), hw=5)
    t.record_fetch("b", 3, 8, now=1.0)  # b restarted empty-ish
    assert not t.advance_high_watermark(8)
    assert t.high_watermark == 5
    t.record_fetch("c", 0, 8, now=1.0)  # c is not in the ISR: does not hold the HW
    t.record_fetch("b", 8, 8, now=2.0)
    assert t.advance_high_watermark(8) and t.high_watermark == 8


def test_caught_up_under_a_steady_stream() -> None:
    t = tracker()
    t.record_fetch("b", 0, 100, now=1.0)  # behind
    t.record_fetch("b", 100, 150, now=2.0)  # has what the leader had at its previous fetch
    assert t.followers["b"].last_caught_up == 1.0
    t.record_fetch("b", 150, 150, now=3.0)  # has everything
    assert t.followers["b"].last_caught_up == 3.0


def test_shrink_and_expand() -> None:
    t = tracker()
    t.record_fetch("b", 10, 10, now=1.0)
    t.record_fetch("c", 2, 10, now=1.0)
    assert t.out_of_sync(now=5.0, lag_time_max=10.0) == set()
    assert t.out_of_sync(now=10.5, lag_time_max=10.0) == {"c"}  # never caught up since 0.0
    t.set_isr({"a", "b"})
    t.advance_high_watermark(10)
    assert t.high_watermark == 10
    assert t.ready_to_join() == set()  # c has 2 < HW 10
    t.record_fetch("c", 10, 10, now=11.0)
    assert t.ready_to_join() == {"c"}


def test_new_replicas_start_caught_up_and_the_leader_is_always_in_sync() -> None:
    t = tracker(isr=("b",))
    assert "a" in t.isr
    t.set_replicas(("a", "b", "c", "d"), now=50.0)
    assert t.followers["d"].last_caught_up == 50.0
    t.set_replicas(("a", "b"), now=60.0)
    assert set(t.followers) == {"b"}
