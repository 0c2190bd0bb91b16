"""What a partition leader knows of its followers: their progress, the ISR, the high watermark.

Rules (Kafka's):

- A follower's log end offset (LEO) is the offset it asks for in a
  ReplicaFetch: it has every record below it.
- A follower is caught up at the time of a fetch that asks for the
  leader's LEO (it has everything), or, if it asks for the LEO the leader
  had at the follower's previous fetch, at the time of that previous fetch
  (it had everything then). So a steady stream of produces does not keep a
  healthy follower "behind".
- The high watermark (HW) is the lowest LEO in the in-sync replica set
  (ISR), the leader's own included. Consumers read below it; acks=all
  completes once it passes a batch. While a broker leads, its HW never goes
  down.
- An ISR follower that has not been caught up for `replica_lag_time_max`
  leaves the ISR (shrink); a follower outside it whose LEO reached the HW
  joins again (expand). The tracker only says who; the caller writes the
  new ISR through the coordinator (compare-and-set) and then calls
  `set_isr`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

UNKNOWN = -1


@dataclass(slots=True)
class FollowerProgress:
    """One follower as seen by the leader."""

    log_end_offset: int = UNKNOWN
    last_caught_up: float = 0.0
    last_fetch: float = 0.0
    leader_leo_at_last_fetch: int = UNKNOWN


class ReplicaTracker:
    """Leader-side replication state of one partition."""

    def __init__(
        self,
        me: str,
        replicas: Iterable[str],
        isr: Iterable[str],
        high_watermark: int,
        now: float,
    ) -> None:
        self.me = me
        self.replicas: tuple[str, ...] = ()
        self.isr: frozenset[str] = frozenset()
        self.high_watermark = high_watermark
        self.followers: dict[str, FollowerProgress] = {}
        self.set_replicas(replicas, now)
        self.set_isr(isr)

    def set_replicas(self, replicas: Iterable[str], now: float) -> None:
        """Follow a new replica list; new followers count as caught up from `now`."""
        self.replicas = tuple(replicas)
        known = self.followers
        self.followers = {
            r: known.get(r) or FollowerProgress(last_caught_up=now)
            for r in self.replicas
            if r != self.me
        }

    def set_isr(self, isr: Iterable[str]) -> None:
        """The ISR as stored by the coordinator (the leader is always in it)."""
        self.isr = frozenset(isr) | {self.me}

    def record_fetch(self, replica_id: str, offset: int, leader_leo: int, now: float) -> None:
        """A follower fetched from `offset`: it has everything below it."""
        progress = self.followers.get(replica_id)
        if progress is None:
            return
        if offset >= leader_leo:
            progress.last_caught_up = now
        elif offset >= progress.leader_leo_at_last_fetch >= 0:
            progress.last_caught_up = max(progress.last_caught_up, progress.last_fetch)
        progress.log_end_offset = offset
        progress.last_fetch = now
        progress.leader_leo_at_last_fetch = leader_leo

    def advance_high_watermark(self, leader_leo: int) -> bool:
        """Raise the HW to the lowest LEO in the ISR; True if it moved."""
        low = leader_leo
        for replica in self.isr:
            if replica == self.me:
                continue
            progress = self.followers.get(replica)
            leo = progress.log_end_offset if progress is not None else UNKNOWN
            if leo == UNKNOWN:
                return False  # an in-sync follower not heard from yet holds the HW
            low = min(low, leo)
        if low > self.high_watermark:
            self.high_watermark = low
            return True
        return False

    def out_of_sync(self, now: float, lag_time_max: float) -> set[str]:
        """ISR followers not caught up within `lag_time_max` seconds."""
        return {
            replica
            for replica in self.isr
            if replica != self.me
            and (p := self.followers.get(replica)) is not None
            and now - p.last_caught_up > lag_time_max
        }

    def ready_to_join(self) -> set[str]:
        """Followers outside the ISR whose LEO has reached the high watermark."""
        return {
            replica
            for replica, p in self.followers.items()
            if replica not in self.isr and p.log_end_offset >= self.high_watermark
        }
