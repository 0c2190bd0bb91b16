"""ProducerStateManager rules, and producer state kept by a partition across restarts,
truncation and replication."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from comet.broker.errors import InvalidRequestError, OutOfOrderSequenceError, ProducerFencedError
from comet.broker.partition import ACKS_LEADER, Partition
from comet.broker.producer_state import (
    CACHED_BATCHES,
    SEQUENCE_MODULUS,
    Duplicate,
    ProducerStateManager,
)
from comet.broker.replica_fetcher import ReplicaFetcher
from comet.records import BatchHeader, RecordBatchBuilder, encode_batch
from comet.storage import LogConfig, PartitionLog

PID = 1000


def hdr(pid: int, epoch: int, seq: int, count: int = 1, base_offset: int = 0) -> BatchHeader:
    """A batch header as validate_batches returns it (base_offset 0 until the broker stamps)."""
    return BatchHeader(base_offset, 100, -1, 2, 0, 0, count - 1, 1, 1, pid, epoch, seq, count)


def appended(state: ProducerStateManager, *headers: BatchHeader) -> int:
    """Check, then record the headers at the state's end offset; return that offset."""
    assert state.check(headers) is None
    first = max(state.end_offset, 0)
    state.record(headers, first)
    return first


def test_an_unknown_producer_starts_anywhere_then_must_continue():
    state = ProducerStateManager("t/0")
    assert appended(state, hdr(PID, 0, 0, 10)) == 0
    assert appended(state, hdr(PID, 0, 10, 5)) == 10
    assert state.entry(PID).next_sequence == 15
    appended(state, hdr(PID + 1, 3, 500))  # retention may have removed its earlier batches
    assert state.entry(PID + 1).next_sequence == 501
    assert state.end_offset == 16


def test_a_retry_is_a_duplicate_answered_with_the_original_offsets():
    state = ProducerStateManager("t/0")
    appended(state, hdr(PID, 0, 0, 10))
    appended(state, hdr(-1, -1, -1, 7))  # someone else's records in between
    appended(state, hdr(PID, 0, 10, 5))
    assert state.check([hdr(PID, 0, 10, 5)]) == Duplicate(17, 21, 5)
    assert state.check([hdr(PID, 0, 0, 10)]) == Duplicate(0, 9, 10)
    assert state.end_offset == 22
    assert state.entry(PID).next_sequence == 15  # a duplicate changes nothing


def test_only_the_last_five_batches_are_remembered():
    state = ProducerStateManager("t/0")
    for i in range(CACHED_BATCHES + 1):
        appended(state, hdr(PID, 0, 2 * i, 2))
    assert state.check([hdr(PID, 0, 2, 2)]) == Duplicate(2, 3, 2)
    with pytest.raises(OutOfOrderSequenceError, match=r"expected sequence 12, received 0.*older"):
        state.check([hdr(PID, 0, 0, 2)])


def test_a_gap_is_refused_naming_expected_and_received():
    state = ProducerStateManager("t/0")
    appended(state, hdr(PID, 0, 0, 3))
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 3, received 5"):
        state.check([hdr(PID, 0, 5)])
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 3, received 1"):
        state.check([hdr(PID, 0, 1, 2)])  # overlaps the last batch without matching it
    assert state.entry(PID).next_sequence == 3


def test_an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero():
    state = ProducerStateManager("t/0")
    appended(state, hdr(PID, 2, 0, 4))
    with pytest.raises(ProducerFencedError, match=r"epoch 1 is older than .* current epoch 2"):
        state.check([hdr(PID, 1, 4)])
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 0, received 4"):
        state.check([hdr(PID, 3, 4)])
    appended(state, hdr(PID, 3, 0, 2))
    assert state.entry(PID).epoch == 3
    assert state.entry(PID).next_sequence == 2
    with pytest.raises(ProducerFencedError):
        state.check([hdr(PID, 2, 0, 4)])  # even a retry of the old epoch's batch


def test_sequences_wrap_past_int32_max():
    state = ProducerStateManager("t/0")
    appended(state, hdr(PID, 0, SEQUENCE_MODULUS - 3, 5))
    assert state.entry(PID).batches[-1].last_seq == 1
    assert state.check([hdr(PID, 0, SEQUENCE_MODULUS - 3, 5)]) == Duplicate(0, 4, 5)
    appended(state, hdr(PID, 0, 2, 1))
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 3"):
        state.check([hdr(PID, 0, 0)])


def test_several_batches_in_one_request():
    state = ProducerStateManager("t/0")
    # checked in order, each against what the earlier ones leave
    appended(state, hdr(PID, 0, 0, 10), hdr(PID, 0, 10, 10), hdr(PID + 1, 0, 0, 1))
    assert state.end_offset == 21
    # one bad batch refuses the whole request, and nothing changes
    with pytest.raises(OutOfOrderSequenceError, match=r"batch 1 .* expected sequence 25"):
        state.check([hdr(PID, 0, 20, 5), hdr(PID, 0, 30, 5)])
    appended(state, hdr(PID + 2, 3, 0))
    with pytest.raises(ProducerFencedError, match="batch 1 of producer 1002"):
        state.check([hdr(-1, -1, -1), hdr(PID + 2, 2, 1)])
    assert state.entry(PID).next_sequence == 20
    # the same request resent unchanged is one duplicate, with its original span
    assert state.check([hdr(PID, 0, 0, 10), hdr(PID, 0, 10, 10)]) == Duplicate(0, 19, 20)
    # the same batch twice in a request is a sequence error, not a duplicate
    with pytest.raises(OutOfOrderSequenceError):
        state.check([hdr(PID, 0, 20, 5), hdr(PID, 0, 20, 5)])
    # duplicates mixed with new batches are refused
    with pytest.raises(OutOfOrderSequenceError, match="mixes 1 duplicate"):
        state.check([hdr(PID, 0, 10, 10), hdr(PID, 0, 20, 5)])
    # duplicates of writes that are not contiguous are refused
    appended(state, hdr(-1, -1, -1, 3), hdr(PID, 0, 20, 5))
    with pytest.raises(OutOfOrderSequenceError, match="different earlier writes"):
        state.check([hdr(PID, 0, 10, 10), hdr(PID, 0, 20, 5)])


def test_producer_id_minus_one_bypasses_everything_and_bad_fields_are_refused():
    state = ProducerStateManager("t/0")
    for _ in range(3):
        appended(state, hdr(-1, -1, -1, 4))
    assert len(state) == 0 and state.end_offset == 12
    for bad in (hdr(PID, 0, -1), hdr(PID, -1, 0), hdr(-2, 0, 0)):
        with pytest.raises(InvalidRequestError):
            state.check([bad])


def test_rebuild_from_stored_headers_equals_the_live_state():
    live = ProducerStateManager("t/0")
    stored: list[BatchHeader] = []
    seqs = {PID: 0, PID + 1: 0}
    offset = 0
    for i in range(40):
        pid = (PID, PID + 1, -1)[i % 3]
        epoch = 0 if i < 30 or pid != PID else 1
        if pid == PID and i == 30:
            seqs[PID] = 0
        header = hdr(pid, epoch if pid >= 0 else -1, seqs.get(pid, -1), 1 + i % 4)
        if pid >= 0:
            seqs[pid] += header.record_count
        live.record([header], offset)
        stored.append(header._replace(base_offset=offset))
        offset += header.record_count
    rebuilt = ProducerStateManager("t/0")
    rebuilt.rebuild(stored, offset)
    assert rebuilt.end_offset == live.end_offset == offset
    for pid in (PID, PID + 1):
        assert rebuilt.entry(pid).epoch == live.entry(pid).epoch
        assert list(rebuilt.entry(pid).batches) == list(live.entry(pid).batches)
    assert rebuilt.entry(PID).epoch == 1


# --- a partition keeps the state across restarts, truncation and replication ---------------


def idempotent(pid: int, seq: int, *values: bytes, epoch: int = 0) -> bytes:
    builder = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for value in values:
        builder.append(None, value)
    return builder.build()


CONFIG = LogConfig(segment_bytes=2048, index_interval_bytes=256)


def open_partition(directory: Path, *, leader: bool = True) -> Partition:
    partition = Partition("t", 0, PartitionLog.open(directory, CONFIG))
    partition.is_leader = leader
    return partition


async def close(partition: Partition) -> None:
    await partition.flusher.close()
    partition.log.close()


async def test_a_restarted_partition_still_recognises_retries(tmp_path: Path):
    p = open_partition(tmp_path / "p")
    first = await p.produce(idempotent(PID, 0, b"a", b"b"), ACKS_LEADER, 5)
    for i in range(30):  # several segments
        await p.produce(encode_batch([(None, b"x" * 100)]), ACKS_LEADER, 5)
        await p.produce(idempotent(PID + 1, i, b"y" * 50), ACKS_LEADER, 5)
    last = await p.produce(idempotent(PID, 2, b"c"), ACKS_LEADER, 5)
    end = p.log.log_end_offset
    assert p.log.segment_count > 2
    await close(p)

    p = open_partition(tmp_path / "p")
    try:
        assert len(p.producers) == 0  # loaded in a worker thread before the first write
        retries = await asyncio.gather(  # both wait for the load, neither writes
            p.produce(idempotent(PID, 2, b"c"), ACKS_LEADER, 5),
            p.produce(idempotent(PID, 2, b"c"), ACKS_LEADER, 5),
        )
        for again in retries:
            assert (again.base_offset, again.last_offset) == (last.base_offset, last.last_offset)
        assert len(p.producers) == 2
        again = await p.produce(idempotent(PID, 0, b"a", b"b"), ACKS_LEADER, 5)
        assert (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset)
        assert p.log.log_end_offset == end
        with pytest.raises(OutOfOrderSequenceError, match="expected sequence 3, received 4"):
            await p.produce(idempotent(PID, 4, b"gap"), ACKS_LEADER, 5)
        with pytest.raises(OutOfOrderSequenceError, match="expected sequence 30"):
            await p.produce(idempotent(PID + 1, 31, b"gap"), ACKS_LEADER, 5)
        assert p.log.log_end_offset == end
    finally:
        await close(p)


async def test_truncation_rebuilds_the_state(tmp_path: Path):
    p = open_partition(tmp_path / "p")
    try:
        await p.produce(idempotent(PID, 0, b"a"), ACKS_LEADER, 5)
        cut = await p.produce(idempotent(PID, 1, b"b", b"c"), ACKS_LEADER, 5)
        p.log.truncate_to(cut.base_offset)
        # the cut batch is no longer a duplicate: it is written again, at the new end
        again = await p.produce(idempotent(PID, 1, b"b", b"c"), ACKS_LEADER, 5)
        assert again.base_offset == cut.base_offset
        assert p.log.log_end_offset == cut.last_offset + 1
        assert p.producers.entry(PID).next_sequence == 3
    finally:
        await close(p)


async def test_a_follower_keeps_the_state_so_a_new_leader_deduplicates(tmp_path: Path):
    leader = open_partition(tmp_path / "leader")
    follower = open_partition(tmp_path / "follower", leader=False)
    try:
        fetcher = ReplicaFetcher(follower, "b2", "b1", "", 0, link=None)  # type: ignore[arg-type]
        acked = []
        for seq in range(0, 12, 3):
            acked.append(await leader.produce(idempotent(PID, seq, b"1", b"2", b"3"), 1, 5))
            result = leader.log.read(follower.log.log_end_offset, 1 << 20)
            await fetcher._append(result.records)
        assert follower.log.log_end_offset == leader.log.log_end_offset
        follower.is_leader = True  # failover
        retry = await follower.produce(idempotent(PID, 9, b"1", b"2", b"3"), ACKS_LEADER, 5)
        assert (retry.base_offset, retry.last_offset) == (acked[-1].base_offset, 11)
        assert follower.log.log_end_offset == 12
        with pytest.raises(OutOfOrderSequenceError, match="expected sequence 12, received 13"):
            await follower.produce(idempotent(PID, 13, b"x"), ACKS_LEADER, 5)
    finally:
        await close(leader)
        await close(follower)


async def test_a_cancelled_writer_does_not_abandon_or_repeat_the_load(tmp_path: Path):
    p = open_partition(tmp_path / "p")
    acked = await p.produce(idempotent(PID, 0, b"a"), ACKS_LEADER, 5)
    await close(p)
    p = open_partition(tmp_path / "p")
    started, release = threading.Event(), threading.Event()
    calls = []
    rebuild = p.producers.rebuild

    def slow_rebuild(headers, end_offset):
        calls.append(end_offset)
        started.set()
        release.wait(10)
        rebuild(headers, end_offset)

    p.producers.rebuild = slow_rebuild  # type: ignore[method-assign]
    try:
        first = asyncio.create_task(p.produce(idempotent(PID, 0, b"a"), ACKS_LEADER, 5))
        await asyncio.to_thread(started.wait, 10)
        first.cancel()  # e.g. a replica fetcher stopped on a leadership change
        second = asyncio.create_task(p.produce(idempotent(PID, 0, b"a"), ACKS_LEADER, 5))
        release.set()
        again = await second
        assert (again.base_offset, again.last_offset) == (acked.base_offset, acked.last_offset)
        assert calls == [1] and p.log.log_end_offset == 1
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        release.set()
        await close(p)
