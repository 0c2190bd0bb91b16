import errno
import os

import pytest

import comet.storage.leader_epoch as leader_epoch_module
import comet.storage.log_append as log_append_module
from comet.records import validate_batches
from comet.storage import (
    LogConfig,
    LogFlushError,
    LogOfflineError,
    LogWriteError,
    PartitionLog,
)

from .support import make_batch, produce, read_all

CONFIG = LogConfig(segment_bytes=4096, index_interval_bytes=100)


@pytest.fixture
def log(tmp_path):
    plog = PartitionLog.open(tmp_path / "p", CONFIG)
    for i in range(10):
        produce(plog, records=2, value_size=80, tag=i)
    yield plog
    plog.close()


def fail_after_partial_write(monkeypatch, error=errno.ENOSPC):
    """os.write writes half of its first call's bytes, then fails."""
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, memoryview(data)[: len(data) // 2])
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "write", write)
    return calls


def test_enospc_mid_append_leaves_the_log_unchanged(log, monkeypatch):
    before = read_all(log)
    end, size = log.log_end_offset, log.size_bytes
    active = log._segments[-1].path
    calls = fail_after_partial_write(monkeypatch)
    buf = make_batch(5, 50, tag=99)
    with pytest.raises(LogWriteError) as caught:
        log.append(buf, validate_batches(buf), 0)
    monkeypatch.undo()
    assert len(calls) == 2
    error = caught.value
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOSPC
    assert active in str(error)
    assert error.rolled_back
    assert (log.log_end_offset, log.size_bytes) == (end, size)
    assert os.path.getsize(active) == log._segments[-1].size
    assert read_all(log) == before
    info = produce(log, records=3, tag=100)
    assert info.base_offset == end
    assert read_all(log)[-1].key == b"k100-2"


def test_log_survives_reopen_after_a_failed_append(log, monkeypatch, tmp_path):
    fail_after_partial_write(monkeypatch)
    buf = make_batch(5, 300, tag=99)
    with pytest.raises(LogWriteError):
        log.append(buf, validate_batches(buf), 0)
    monkeypatch.undo()
    expected = read_all(log)
    log.close()
    again = PartitionLog.open(tmp_path / "p", CONFIG)
    assert read_all(again) == expected
    again.close()


def test_failed_rollback_takes_the_log_offline(log, monkeypatch):
    fail_after_partial_write(monkeypatch)

    def ftruncate(fd, length):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    buf = make_batch(2, tag=99)
    with pytest.raises(LogWriteError) as caught:
        log.append(buf, validate_batches(buf), 0)
    monkeypatch.undo()
    assert not caught.value.rolled_back
    with pytest.raises(LogOfflineError, match="reopen it to recover"):
        produce(log)
    with pytest.raises(LogOfflineError):
        log.flush()
    assert len(read_all(log)) == 20


def test_fsync_failure_takes_the_log_offline(log, monkeypatch):
    def fdatasync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(LogFlushError) as caught:
        log.flush()
    monkeypatch.undo()
    assert caught.value.errno == errno.EIO
    assert log._segments[-1].path in str(caught.value)
    assert log.flushed_offset == 0
    with pytest.raises(LogOfflineError):
        log.flush()
    with pytest.raises(LogOfflineError):
        produce(log)


def test_enospc_right_after_a_roll_keeps_offsets_and_the_empty_segment_usable(log, monkeypatch):
    end = log.log_end_offset
    segments = log.segment_count
    fail_after_partial_write(monkeypatch)
    buf = make_batch(10, 300, tag=99)  # too big for the active segment: rolls first
    with pytest.raises(LogWriteError):
        log.append(buf, validate_batches(buf), 0)
    monkeypatch.undo()
    assert log.segment_count == segments + 1
    assert log._segments[-1].size == 0
    assert log.log_end_offset == end
    assert produce(log, tag=5).base_offset == end
    assert log.segment_count == segments + 1


def test_a_failed_roll_removes_the_new_files_and_keeps_appending(log, monkeypatch, tmp_path):
    def broken_fsync(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log_append_module, "fsync_directory", broken_fsync)
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    buf = make_batch(10, 300, tag=99)
    with pytest.raises(LogWriteError, match="rolling to a new segment") as caught:
        log.append(buf, validate_batches(buf), 0)
    monkeypatch.undo()
    assert caught.value.rolled_back
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == files
    info = log.append(buf, validate_batches(buf), 0)
    assert info.base_offset == 20
    assert read_all(log)[-1].offset == 29


def test_a_roll_whose_index_writes_fail_keeps_the_log_online(log, monkeypatch, tmp_path):
    """A full disk at roll time: the sealed segment's indexes are derived data, not a reason
    to take the partition offline."""

    def pwrite(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    segments = log.segment_count
    monkeypatch.setattr(os, "pwrite", pwrite)
    buf = make_batch(10, 300, tag=99)  # too big for the active segment: rolls first
    info = log.append(buf, validate_batches(buf), 0)
    log.flush()
    monkeypatch.undo()
    assert log.segment_count == segments + 1
    assert info.base_offset == 20
    assert produce(log, tag=100).base_offset == 30
    expected = read_all(log)
    log.close()
    again = PartitionLog.open(tmp_path / "p", CONFIG)
    assert read_all(again) == expected
    again.close()


def test_a_checkpoint_that_cannot_be_written_does_not_fail_the_append(log, monkeypatch, tmp_path):
    def write_all(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(leader_epoch_module, "write_all", write_all)
    info = produce(log, tag=50, leader_epoch=3)  # a new epoch: the checkpoint changes
    monkeypatch.undo()
    assert info.base_offset == 20
    assert log.leader_epochs.entries[-1] == (3, 20)
    assert not list((tmp_path / "p").glob("*.tmp"))
    log.close()
    again = PartitionLog.open(tmp_path / "p", CONFIG)
    assert again.leader_epochs.entries[-1] == (3, 20)  # the stale file was rebuilt
    again.close()
