"""A partition's log: the segments of one directory, appended, read, rolled and retained.

PartitionLog holds the segment list, the offsets, durability (flush),
truncation and the lifecycle. Appending and rolling are in log_append.py,
reads in log_read.py, retention in log_retention.py, and the leader-epoch
checkpoint in leader_epoch.py.

Crash consistency
-----------------
What is fsynced when:

- `append` writes all of a request's batches to the active segment's .log
  with one write and does not fsync. `flush` (run by LogFlusher before an
  ack under flush.policy "batch", on a timer under "interval", on roll and
  close always) fdatasyncs the .log and only then writes the index entries
  that describe the synced bytes to .index and .timeindex (not fsynced);
  flushed_offset then advances to the log end offset read before the fsync.
- A roll seals the old active segment (fdatasync of its .log, a last time
  index entry, both index files written and fdatasynced) before the next
  segment's file is created and the directory fsynced. So a segment that
  has a successor is complete and durable, and so are its indexes.
- `truncate_to` cuts and fsyncs the files (and the directory when it
  deletes segments) before new appends can reuse the cut offsets, so cut
  batches cannot come back after a crash.
- Retention deletes whole sealed segments, .log first; a deletion lost in a
  crash only brings an old segment back.

Why a torn tail is the only damage the active segment can have: bytes below
its last fsync survive a crash; above it any mix of written, missing,
zero-filled or partly written pages is possible. Every index entry on disk
was written after the bytes it points at were fsynced, so the last entry
that still points at a batch with the expected base offset lies in the
durable part. Recovery re-validates every batch from there (framing,
contiguous offsets, CRC-32C) and cuts the first bad or partial batch and
everything after it. Whatever an ack promised ("batch" policy) was below an
fsync, hence before the cut; batches after a hole are cut too, and were
never acknowledged as durable.

What read-time CRC checks protect: sealed segments are not re-read at
startup (that would read every byte). Damage recovery cannot see there (bit
rot, a bad sector, a file copied in by hand) is caught when it is read:
every batch is CRC-checked before it is returned, a bad batch ends the
result, and a read that would start with one raises CorruptRecordError. So
corrupt bytes are never served. A sealed segment cut short of its
successor's base offset has lost the offsets in between: a read there
raises CorruptRecordError too rather than skipping to the next segment.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from comet.storage.config import LogConfig
from comet.storage.directory import make_directory, segment_base_offsets
from comet.storage.errors import (
    LogClosedError,
    LogFlushError,
    LogIOError,
    LogOfflineError,
    LogWriteError,
    StorageError,
    io_error,
)
from comet.storage.files import fsync_directory
from comet.storage.leader_epoch import LeaderEpochCache, recover_checkpoint
from comet.storage.log_append import AppendInfo, LogAppends
from comet.storage.log_read import LogReads, ReadResult
from comet.storage.log_retention import LogRetention
from comet.storage.segment import LogSegment, locate_segment

__all__ = ["AppendInfo", "PartitionLog", "ReadResult"]

log = structlog.get_logger(__name__)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionLog(LogAppends, LogReads, LogRetention):
    """The log of one partition in `{data_dir}/{topic}/{partition}/`.

    Segments are `{base_offset:020d}.log` with `.index` and `.timeindex`
    beside them (formats in LogSegment, OffsetIndex, TimeIndex); the last one
    is active and takes appends. Offsets are contiguous from log_start_offset
    (the first segment's base offset) to log_end_offset.

    Threads: one owner thread (the event loop) calls append, append_stamped,
    truncate_to and update_config; read and offset_for_timestamp may run
    anywhere; flush, apply_retention, close and delete may run in worker
    threads concurrently with the owner. After close or delete every
    operation raises LogClosedError. After an fsync failure, or a write that
    could not be rolled back, the log goes offline: appends and flushes raise
    LogOfflineError until it is reopened (which recovers it).
    """

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        segments: Sequence[LogSegment],
        now_ms: Callable[[], int],
    ) -> None:
        self.directory = directory
        self.config = config
        self._now_ms = now_ms
        self._segments = tuple(segments)
        self._log_end_offset = segments[-1].next_offset
        self._flushed_offset = segments[-1].base_offset
        self._truncations = 0
        self._structure_lock = threading.Lock()  # changes to the segment list
        self._state_lock = threading.Lock()  # flushed_offset and _truncations
        self._offline: StorageError | None = None
        self._closed = False
        self.leader_epochs = LeaderEpochCache(directory)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        config: LogConfig,
        *,
        now_ms: Callable[[], int] | None = None,
    ) -> PartitionLog:
        """Open the log in `directory` (created if missing), recovering the active segment."""
        started = time.monotonic()
        path = Path(directory)
        segments: list[LogSegment] = []
        try:
            make_directory(path)
            bases = segment_base_offsets(path)
            interval = config.index_interval_bytes
            if not bases:
                segments.append(LogSegment.create(path, 0, interval))
                fsync_directory(path)
            for i, base in enumerate(bases):
                next_base = bases[i + 1] if i + 1 < len(bases) else None
                segments.append(LogSegment.load(path, base, interval, next_base_offset=next_base))
        except BaseException as exc:
            for segment in segments:
                segment.close()
            if isinstance(exc, OSError) and not isinstance(exc, LogIOError):
                raise io_error(LogIOError, exc, "opening log", path) from exc
            raise
        plog = cls(path, config, segments, now_ms or _wall_clock_ms)
        try:
            plog.leader_epochs = recover_checkpoint(path, segments)
            plog.flush()  # what recovery kept is durable from here on: flushed_offset = end
        except BaseException:
            for segment in segments:
                segment.close()
            raise
        log.info(
            "log.opened",
            directory=str(path),
            segments=len(segments),
            log_start_offset=plog.log_start_offset,
            log_end_offset=plog.log_end_offset,
            size_bytes=plog.size_bytes,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return plog

    # --- state -----------------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """First offset still stored."""
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        """Offset the next appended record will get."""
        return self._log_end_offset

    @property
    def flushed_offset(self) -> int:
        """Every offset below this one is fsynced (the recovery point)."""
        return self._flushed_offset

    @property
    def size_bytes(self) -> int:
        """Total bytes of all segment .log files."""
        return sum(segment.size for segment in self._segments)

    @property
    def segment_count(self) -> int:
        """Number of segments, the active one included."""
        return len(self._segments)

    def update_config(self, config: LogConfig) -> None:
        """Apply a changed topic config from the next append on."""
        self.config = config
        for segment in self._segments:
            segment.index_interval_bytes = config.index_interval_bytes

    # --- truncation ------------------------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at and after `offset` (a batch containing it goes whole), durably."""
        self._check_writable()
        with self._structure_lock:
            segments = self._segments
            old_end = self._log_end_offset
            # Cases, as in Kafka's truncateTo:
            #  1. offset >= log_end_offset: nothing is stored at or after it; no-op.
            #  2. offset < log_start_offset: nothing survives; every segment is deleted and the
            #     log restarts empty at `offset` (a follower behind the leader's log start).
            #  3. otherwise: segments with base_offset > offset are deleted; the segment holding
            #     `offset` is cut before the batch containing it (so when `offset` falls inside
            #     a batch the new log end is that batch's base, below `offset`) and becomes the
            #     active segment, empty if the cut is at its base.
            # Flushes that started before the truncation must not advance flushed_offset past
            # the new end: _truncations is bumped before and after, and flush checks it.
            if offset >= old_end:
                return
            with self._state_lock:
                self._truncations += 1
            # Durable order: a restarted log may show an unfinished truncation (the caller
            # repeats it), never a gap: the new empty segment exists before the old ones go,
            # and later segments are gone before the one holding `offset` is cut.
            try:
                if offset < segments[0].base_offset:
                    interval = self.config.index_interval_bytes
                    kept: tuple[LogSegment, ...] = (
                        LogSegment.create(self.directory, offset, interval),
                    )
                    fsync_directory(self.directory)
                    doomed = segments
                else:
                    holder = locate_segment(segments, offset)
                    kept, doomed = segments[: holder + 1], segments[holder + 1 :]
                self._segments = kept
                for segment in doomed:
                    segment.delete()
                if doomed:
                    fsync_directory(self.directory)
                new_end = kept[-1].truncate_to(offset)
            except OSError as exc:
                error = io_error(LogWriteError, exc, "truncating log in", self.directory)
                self._go_offline(error)
                raise error from exc
            self._log_end_offset = new_end
            with self._state_lock:
                self._truncations += 1
                self._flushed_offset = min(self._flushed_offset, new_end)
            self.leader_epochs.truncate_from_end(new_end)
        log.info(
            "log.truncated",
            directory=str(self.directory),
            requested_offset=offset,
            from_offset=old_end,
            to_offset=new_end,
            deleted_segments=len(doomed),
        )

    # --- durability and lifecycle ----------------------------------------------------------------

    def flush(self) -> None:
        """fdatasync every segment holding unflushed data; advance flushed_offset (blocking)."""
        self._check_writable()
        self._flush()

    def _flush(self) -> None:
        with self._state_lock:
            generation = self._truncations
        target = self._log_end_offset  # read before the segments: they hold all data below it
        for segment in self._segments:
            if segment.dirty:
                try:
                    segment.flush()
                except LogFlushError as exc:
                    self._go_offline(exc)
                    raise
        with self._state_lock:
            if generation == self._truncations and target > self._flushed_offset:
                self._flushed_offset = target

    def close(self) -> None:
        """Flush and close every file; idempotent."""
        with self._structure_lock:
            if self._closed:
                return
            healthy = self._offline is None
            try:
                if healthy:
                    self._flush()
            finally:
                self._closed = True
                for segment in self._segments:
                    segment.close(sync_indexes=healthy)
        log.info("log.closed", directory=str(self.directory), log_end_offset=self._log_end_offset)

    def delete(self) -> None:
        """Close the log without flushing and remove its directory with every file."""
        with self._structure_lock:
            self._closed = True
            for segment in self._segments:
                segment.close()
        try:
            shutil.rmtree(self.directory)
            fsync_directory(self.directory.parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise io_error(LogIOError, exc, "deleting", self.directory) from exc
        log.info("log.deleted", directory=str(self.directory))

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.directory}: log is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._offline is not None:
            raise LogOfflineError(
                f"{self.directory}: log is offline after an I/O failure ({self._offline}); "
                "reopen it to recover"
            )

    def _go_offline(self, error: StorageError) -> None:
        if self._offline is None:
            self._offline = error
            log.error("log.offline", directory=str(self.directory), error=str(error))

    def __repr__(self) -> str:
        return (
            f"PartitionLog({str(self.directory)!r}, offsets=[{self.log_start_offset}, "
            f"{self._log_end_offset}), segments={len(self._segments)})"
        )
