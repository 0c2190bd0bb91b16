"""A produce that loses its records to a leadership change fails with a retriable error."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from comet.broker.errors import NotLeaderError
from comet.broker.partition import ACKS_LEADER, Partition
from comet.cluster import PartitionState
from comet.records import encode_batch
from comet.storage import LogConfig, PartitionLog

TIMEOUT_S = 5.0


async def test_records_truncated_while_their_fsync_runs_answer_not_leader(tmp_path: Path) -> None:
    # Found by the fault harness: the leader appended, lost leadership while the group
    # commit's fsync ran, and its replica fetcher cut the log below the new records.
    # The produce failed with an internal error, which clients do not retry.
    log = PartitionLog.open(tmp_path / "p", LogConfig())
    partition = Partition("t", 0, log, me="b0")
    await partition.produce(encode_batch([(None, b"kept")]), ACKS_LEADER, TIMEOUT_S)
    flushing, release = threading.Event(), threading.Event()
    real_flush = log.flush

    def slow_flush() -> None:
        flushing.set()
        release.wait(TIMEOUT_S)
        real_flush()

    log.flush = slow_flush  # type: ignore[method-assign]
    try:
        produce = asyncio.create_task(
            partition.produce(encode_batch([(None, b"lost")]), ACKS_LEADER, TIMEOUT_S)
        )
        assert await asyncio.to_thread(flushing.wait, TIMEOUT_S)
        partition.update_state(PartitionState("t", 0, ("b0", "b1"), "b1", 1, ("b1",)), "b0")
        log.truncate_to(1)  # what the follower's fetcher does at the epoch boundary
        release.set()
        with pytest.raises(NotLeaderError, match="truncated; retry at the new leader"):
            await asyncio.wait_for(produce, TIMEOUT_S)
        assert log.log_end_offset == 1
    finally:
        release.set()
        await partition.flusher.close()
        log.close()
