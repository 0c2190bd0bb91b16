"""Idempotent producers on one partition: sequences, duplicate detection and fencing.

A producer that enables idempotence stamps every batch with its producer
id, producer epoch and the base sequence of the batch's first record (one
sequence per partition, int32, wrapping from 2**31 - 1 to 0 as in Kafka).
For each producer id the partition keeps its latest epoch and the last
CACHED_BATCHES batches it appended (first and last sequence, base and last
offset). The rules for a produced batch with producer_id >= 0 (batches with
producer_id -1 bypass all of them):

1. An epoch older than the id's latest is refused (ProducerFencedError).
2. A batch of the latest epoch whose first and last sequence equal one of the
   cached batches is a duplicate (a retry of a write that succeeded): nothing
   is written and the original offsets are the answer.
3. A newer epoch must start at sequence 0; it replaces the id's state.
4. Otherwise the first sequence must be the one after the id's last
   (OutOfOrderSequenceError names expected and received).
5. An id the partition does not know accepts any first sequence: its earlier
   batches may have been deleted by retention (Kafka does the same).

A request with several batches is checked batch by batch, each against the
state the earlier ones would leave; one invalid batch refuses the whole
request and nothing is written. Duplicates are answered only when the whole
request is one: every batch is a duplicate and their original offsets are
contiguous (one earlier request, resent unchanged). A request that mixes
duplicates with new batches is refused as out of order.

The state is kept by leaders and followers alike from the batches they
append (`record`), so a new leader knows every producer, and it is rebuilt
from the log's batch headers on start and after a truncation (`rebuild`).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import structlog

from comet.broker.errors import InvalidRequestError, OutOfOrderSequenceError, ProducerFencedError
from comet.records import BatchHeader

log = structlog.get_logger(__name__)

NO_PRODUCER_ID = -1
CACHED_BATCHES = 5
SEQUENCE_MODULUS = 1 << 31


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """Sequence of a batch's last record (wrapping past 2**31 - 1 to 0)."""
    return (base_sequence + last_offset_delta) % SEQUENCE_MODULUS


def next_sequence(sequence: int) -> int:
    """The sequence after `sequence` (wrapping past 2**31 - 1 to 0)."""
    return (sequence + 1) % SEQUENCE_MODULUS


class BatchMetadata(NamedTuple):
    """One appended batch of a producer: its sequences and where it went."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


class Duplicate(NamedTuple):
    """Where the batches of a duplicate request were written the first time."""

    base_offset: int
    last_offset: int
    record_count: int


class ProducerEntry:
    """The latest epoch of one producer id and its last appended batches."""

    __slots__ = ("batches", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[BatchMetadata] = deque(maxlen=CACHED_BATCHES)

    @property
    def next_sequence(self) -> int:
        """The first sequence the next batch must carry."""
        return next_sequence(self.batches[-1].last_seq) if self.batches else 0

    def find(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        """The cached batch with these sequences, or None."""
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None


class ProducerStateManager:
    """Producer ids, epochs and recent batches of one partition (see the module docstring).

    Not thread-safe: the partition's owner (the event loop) calls `check`,
    the append and `record` without awaiting in between.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._producers: dict[int, ProducerEntry] = {}
        self.end_offset = -1  # the log end offset this state reflects; -1 before the first load

    def __len__(self) -> int:
        return len(self._producers)

    def entry(self, producer_id: int) -> ProducerEntry | None:
        """The state of one producer id, or None if this partition does not know it."""
        return self._producers.get(producer_id)

    def check(self, headers: Sequence[BatchHeader]) -> Duplicate | None:
        """Validate a request's batches; a Duplicate to answer instead of appending, or None.

        Raises ProducerFencedError, OutOfOrderSequenceError or
        InvalidRequestError for the first batch that breaks a rule; the
        state is not changed either way (`record` does that after the append).
        """
        pending: dict[int, tuple[int, int]] = {}  # id -> (epoch, next sequence) of this request
        duplicates: list[BatchMetadata] = []
        new = 0
        for i, header in enumerate(headers):
            pid = header.producer_id
            if pid == NO_PRODUCER_ID:
                new += 1
                continue
            epoch, first = header.producer_epoch, header.base_sequence
            where = f"{self.name}: records batch {i} of producer {pid}"
            if pid < 0 or epoch < 0 or first < 0:
                raise InvalidRequestError(
                    f"{where}: producer_id must be -1 or >= 0, and producer_epoch and "
                    f"base_sequence >= 0 with an id (got epoch {epoch}, sequence {first})"
                )
            last = last_sequence(first, header.last_offset_delta)
            entry = self._producers.get(pid)
            if pid in pending:
                known_epoch, expected = pending[pid]
            elif entry is not None:
                known_epoch, expected = entry.epoch, entry.next_sequence
                if epoch == known_epoch:
                    original = entry.find(first, last)
                    if original is not None:
                        duplicates.append(original)
                        continue
            else:
                pending[pid] = (epoch, next_sequence(last))
                new += 1
                continue
            if epoch < known_epoch:
                raise ProducerFencedError(
                    f"{where}: epoch {epoch} is older than the producer's current epoch "
                    f"{known_epoch}; another producer instance with this id took over, "
                    "so this one must stop"
                )
            if epoch > known_epoch:
                expected = 0
            if first != expected:
                behind = " (a batch older than the last ones this partition remembers?)"
                raise OutOfOrderSequenceError(
                    f"{where}, epoch {epoch}: expected sequence {expected}, received {first}"
                    + (behind if epoch == known_epoch and _is_behind(first, expected) else "")
                    + "; nothing was written"
                )
            pending[pid] = (epoch, next_sequence(last))
            new += 1
        if not duplicates:
            return None
        if new:
            raise OutOfOrderSequenceError(
                f"{self.name}: the request mixes {len(duplicates)} duplicate batch(es) with "
                f"{new} new one(s); resend the duplicates alone or only the new batches; "
                "nothing was written"
            )
        for before, after in itertools.pairwise(duplicates):
            if after.base_offset != before.last_offset + 1:
                raise OutOfOrderSequenceError(
                    f"{self.name}: the request's batches are duplicates of different earlier "
                    f"writes (offsets {before.base_offset}-{before.last_offset} and "
                    f"{after.base_offset}-{after.last_offset}); nothing was written"
                )
        base, last_offset = duplicates[0].base_offset, duplicates[-1].last_offset
        log.info(
            "producer.duplicate",
            partition=self.name,
            producer_id=headers[0].producer_id,
            base_offset=base,
            last_offset=last_offset,
        )
        return Duplicate(base, last_offset, last_offset - base + 1)

    def record(self, headers: Iterable[BatchHeader], first_offset: int) -> None:
        """Take in batches just appended at offsets from `first_offset` on (leader or follower)."""
        offset = first_offset
        for header in headers:
            last = offset + header.last_offset_delta
            if header.producer_id >= 0:
                self._apply(header, offset, last)
            offset = last + 1
        self.end_offset = offset

    def rebuild(self, headers: Iterable[BatchHeader], end_offset: int) -> None:
        """Forget everything and replay stored batch headers (stamped offsets) to `end_offset`."""
        started = time.monotonic()
        self._producers = {}
        batches = 0
        for header in headers:
            batches += 1
            if header.producer_id >= 0:
                self._apply(header, header.base_offset, header.last_offset)
        self.end_offset = end_offset
        log.info(
            "producer_state.rebuilt",
            partition=self.name,
            producers=len(self._producers),
            batches=batches,
            end_offset=end_offset,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _apply(self, header: BatchHeader, base_offset: int, last_offset: int) -> None:
        pid, epoch = header.producer_id, header.producer_epoch
        entry = self._producers.get(pid)
        if entry is None or epoch > entry.epoch:
            entry = self._producers[pid] = ProducerEntry(epoch)
        elif epoch < entry.epoch:
            return  # a leader never accepts it; replicated or stored data cannot change that
        first = header.base_sequence
        last = last_sequence(first, header.last_offset_delta)
        entry.batches.append(BatchMetadata(first, last, base_offset, last_offset))


def _is_behind(received: int, expected: int) -> bool:
    """Whether `received` lies before `expected` in the wrapping sequence space."""
    return 0 < (expected - received) % SEQUENCE_MODULUS < SEQUENCE_MODULUS // 2
