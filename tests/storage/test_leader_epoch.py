"""The leader-epoch checkpoint: kept by appends and truncation, rebuilt when lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from comet.storage import LogConfig, PartitionLog
from comet.storage.leader_epoch import CHECKPOINT_FILE, NO_EPOCH, LeaderEpochCache
from tests.storage.support import produce

SMALL = LogConfig(segment_bytes=1024)


def test_epochs_follow_appends_and_answer_end_offsets(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, SMALL)
    produce(log, 3, leader_epoch=0)  # offsets 0-2
    produce(log, 2, leader_epoch=0)  # 3-4
    produce(log, 4, leader_epoch=2)  # 5-8
    produce(log, 1, leader_epoch=5)  # 9
    cache = log.leader_epochs
    assert cache.entries == [(0, 0), (2, 5), (5, 9)]
    assert cache.latest_epoch == 5
    assert cache.end_offset_for(0, log.log_end_offset) == (0, 5)
    assert cache.end_offset_for(1, log.log_end_offset) == (0, 5)  # largest epoch <= 1
    assert cache.end_offset_for(3, log.log_end_offset) == (2, 9)
    assert cache.end_offset_for(7, log.log_end_offset) == (5, 10)
    log.close()
    again = PartitionLog.open(tmp_path, SMALL)
    assert again.leader_epochs.entries == [(0, 0), (2, 5), (5, 9)]


def test_truncation_forgets_later_epochs(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, SMALL)
    produce(log, 3, leader_epoch=1)
    produce(log, 3, leader_epoch=4)  # starts at 3
    log.truncate_to(3)
    assert log.leader_epochs.entries == [(1, 0)]
    produce(log, 1, leader_epoch=6)
    assert log.leader_epochs.entries == [(1, 0), (6, 3)]


def test_a_lost_or_damaged_checkpoint_is_rebuilt_from_batch_headers(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, SMALL)
    for epoch in (0, 0, 3, 3, 7):
        produce(log, 5, value_size=100, leader_epoch=epoch)  # several segments
    assert log.segment_count > 1
    expected = log.leader_epochs.entries
    log.close()
    (tmp_path / CHECKPOINT_FILE).unlink()
    assert PartitionLog.open(tmp_path, SMALL).leader_epochs.entries == expected
    (tmp_path / CHECKPOINT_FILE).write_text("0\n5\n1 2\n")
    assert PartitionLog.open(tmp_path, SMALL).leader_epochs.entries == expected


def test_a_checkpoint_ahead_of_the_log_is_cut_at_open(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, SMALL)
    produce(log, 2, leader_epoch=1)
    log.close()
    (tmp_path / CHECKPOINT_FILE).write_text("0\n2\n1 0\n9 2\n")  # epoch 9's batches were lost
    assert PartitionLog.open(tmp_path, SMALL).leader_epochs.entries == [(1, 0)]


def test_cache_rules(tmp_path: Path) -> None:
    cache = LeaderEpochCache(tmp_path)
    assert cache.latest_epoch == NO_EPOCH
    assert cache.end_offset_for(3, 10) == (NO_EPOCH, NO_EPOCH)
    assert cache.assign(2, 0)
    assert not cache.assign(2, 5)  # not newer
    assert not cache.assign(1, 5)
    assert cache.assign(4, 7)
    with pytest.raises(ValueError, match="cannot start"):
        cache.assign(5, 6)  # before epoch 4's start
    assert LeaderEpochCache.load(tmp_path).entries == [(2, 0), (4, 7)]
