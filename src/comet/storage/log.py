"""A partition's log: the segments of one directory, appended, read, rolled and retained.

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
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import structlog

from comet.records import BatchHeader, stamp_batch
from comet.storage.config import LogConfig
from comet.storage.directory import make_directory, segment_base_offsets
from comet.storage.errors import (
    CorruptRecordError,
    InvalidOffsetError,
    LogClosedError,
    LogFlushError,
    LogIOError,
    LogOfflineError,
    LogWriteError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
    io_error,
)
from comet.storage.files import fsync_directory
from comet.storage.leader_epoch import LeaderEpochCache, checkpoint_problem
from comet.storage.segment import MAX_RELATIVE_OFFSET, LogSegment
from comet.storage.time_index import NO_TIMESTAMP

log = structlog.get_logger(__name__)

_base_offset = attrgetter("base_offset")


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AppendInfo(NamedTuple):
    """Where an append went: offsets [base_offset, last_offset] and what it held."""

    base_offset: int
    last_offset: int
    record_count: int
    max_timestamp: int
    size: int


class ReadResult(NamedTuple):
    """Whole stored batches from a read.

    `first_offset` is the base offset of the first batch (it may be below the
    offset asked for) and `next_offset` the offset after the last batch,
    where the next read continues; both equal the offset asked for when
    `records` is empty. The log's start and end offsets are as of the read.
    """

    records: bytes | memoryview
    first_offset: int
    next_offset: int
    log_start_offset: int
    log_end_offset: int


class PartitionLog:
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
            plog._load_leader_epochs()
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

    def _load_leader_epochs(self) -> None:
        """Load the leader-epoch checkpoint, rebuilding it from batch headers when needed.

        A checkpoint that parses is still checked against the log (a few
        header reads): a crash between appending a new epoch's first batch and
        writing the checkpoint, or a file restored from a backup, leaves one
        that no longer describes the log, and followers would truncate by it.
        """
        cache = LeaderEpochCache.load(self.directory)
        problem = None
        if cache is not None:
            problem = checkpoint_problem(
                cache.entries, self.log_start_offset, self._log_end_offset, self._batch_epoch
            )
        if problem is not None:
            log.warning("leader_epoch.checkpoint_stale", file=str(cache.path), reason=problem)
            cache = None
        if cache is None:
            entries: list[tuple[int, int]] = []
            for segment in self._segments:
                for epoch, start in segment.epoch_starts():
                    if epoch >= 0 and (not entries or epoch > entries[-1][0]):
                        entries.append((epoch, start))
            cache = LeaderEpochCache(self.directory, entries)
            if entries:
                cache.save()
                log.info("leader_epoch.rebuilt", directory=str(self.directory), epochs=len(entries))
        cache.truncate_from_end(self._log_end_offset)
        self.leader_epochs = cache

    def _batch_epoch(self, offset: int) -> tuple[int, int] | None:
        """(base offset, leader epoch) of the batch holding `offset`; None if unreadable."""
        segments = self._segments
        segment = segments[bisect_right(segments, offset, key=_base_offset) - 1]
        try:
            return segment.batch_epoch(offset)
        except CorruptRecordError:
            return None

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

    # --- appending -------------------------------------------------------------------------------

    def append(
        self, buf: bytearray, headers: Sequence[BatchHeader], leader_epoch: int
    ) -> AppendInfo:
        """Stamp offsets and leader epoch into validated batches and append them (no fsync)."""
        self._check_writable()
        size = len(buf)
        if size > self.config.max_message_bytes:
            raise RecordTooLargeError(
                f"{self.directory}: append of {size} bytes exceeds "
                f"max.message.bytes={self.config.max_message_bytes}"
            )
        _check_headers_cover(buf, headers)
        first = offset = self._log_end_offset
        pos = count = 0
        max_ts = NO_TIMESTAMP
        for header in headers:
            stamp_batch(buf, pos, offset, leader_epoch)
            pos += header.size
            offset += header.last_offset_delta + 1
            count += header.record_count
            if header.max_timestamp > max_ts:
                max_ts = header.max_timestamp
        self._write(buf, headers, first, offset, max_ts)
        if leader_epoch > self.leader_epochs.latest_epoch:
            self._assign_epoch(leader_epoch, first)
        return AppendInfo(first, offset - 1, count, max_ts, size)

    def append_stamped(
        self, buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader]
    ) -> AppendInfo:
        """Append batches that already carry their offsets (replication); no stamping."""
        self._check_writable()
        _check_headers_cover(buf, headers)
        first = expected = self._log_end_offset
        pos = count = 0
        max_ts = NO_TIMESTAMP
        for header in headers:
            if header.base_offset != expected:
                raise InvalidOffsetError(
                    f"{self.directory}: batch at byte {pos} has base_offset "
                    f"{header.base_offset}, expected {expected} (log end offset {first})"
                )
            pos += header.size
            expected = header.next_offset
            count += header.record_count
            if header.max_timestamp > max_ts:
                max_ts = header.max_timestamp
        self._write(buf, headers, first, expected, max_ts)
        epochs = self.leader_epochs
        for header in headers:
            if header.partition_leader_epoch > epochs.latest_epoch:
                self._assign_epoch(header.partition_leader_epoch, header.base_offset)
        return AppendInfo(first, expected - 1, count, max_ts, len(buf))

    def _assign_epoch(self, epoch: int, start_offset: int) -> None:
        """Record a new leader epoch after its first batch was appended.

        The batch is in the log already, so a checkpoint that cannot be
        written (a full disk) must not fail the append: the epoch is kept in
        memory, and the file, stale until the next change, is rebuilt from
        the batch headers when the log is opened again.
        """
        try:
            self.leader_epochs.assign(epoch, start_offset)
        except OSError as exc:
            log.warning(
                "leader_epoch.checkpoint_write_failed",
                directory=str(self.directory),
                epoch=epoch,
                error=str(exc),
            )

    def _write(
        self,
        buf: bytes | bytearray | memoryview,
        headers: Sequence[BatchHeader],
        first_offset: int,
        next_offset: int,
        max_timestamp: int,
    ) -> None:
        segment = self._segments[-1]
        if segment.size > 0:
            reason = self._roll_reason(segment, len(buf), next_offset - 1, max_timestamp)
            if reason is not None:
                segment = self._roll(first_offset, reason)
        try:
            segment.append(buf, headers, first_offset)
        except LogWriteError as exc:
            if not exc.rolled_back:
                self._go_offline(exc)
            raise
        self._log_end_offset = next_offset

    def _roll_reason(
        self, segment: LogSegment, size: int, last_offset: int, max_timestamp: int
    ) -> str | None:
        if segment.size + size > self.config.segment_bytes:
            return "segment.bytes"
        first_ts = segment.first_timestamp
        # Like Kafka: the age is measured between batch timestamps, not against the broker
        # clock, so a producer replaying old data does not roll on every append.
        if first_ts is not None and max_timestamp - first_ts > self.config.segment_ms:
            return "segment.ms"
        if last_offset - segment.base_offset > MAX_RELATIVE_OFFSET:
            return "relative offset overflow"
        return None

    def _roll(self, base_offset: int, reason: str) -> LogSegment:
        """Seal the active segment and start a new one at `base_offset`."""
        with self._structure_lock:
            old = self._segments[-1]
            try:
                old.seal()
            except OSError as exc:
                error = io_error(LogFlushError, exc, "sealing", old.path)
                self._go_offline(error)
                raise error from exc
            try:
                new = LogSegment.create(self.directory, base_offset, old.index_interval_bytes)
                fsync_directory(self.directory)
            except OSError as exc:
                error = io_error(LogWriteError, exc, "rolling to a new segment in", self.directory)
                try:
                    LogSegment.remove_files(self.directory, base_offset)
                except OSError:
                    # A leftover empty segment would claim offsets the old one keeps taking.
                    error.rolled_back = False
                    self._go_offline(error)
                raise error from exc
            self._segments = (*self._segments, new)
        log.info(
            "segment.rolled",
            file=new.path,
            base_offset=base_offset,
            previous_size=old.size,
            reason=reason,
        )
        return new

    # --- reading ---------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> ReadResult:
        """Whole CRC-checked batches from the one containing `offset`, below `max_offset`.

        Stops before exceeding max_bytes but returns at least one batch if any
        is available; never a batch whose base_offset >= max_offset (default:
        log_end_offset). Raises OffsetOutOfRangeError outside
        [log_start_offset, log_end_offset] and CorruptRecordError when the
        first batch is corrupt.
        """
        self._check_open()
        segments = self._segments
        end = self._log_end_offset
        start = segments[0].base_offset
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(offset, start, end)
        limit = end if max_offset is None else min(max_offset, end)
        if offset >= limit:
            return ReadResult(b"", offset, offset, start, end)
        first = bisect_right(segments, offset, key=_base_offset) - 1
        for i, segment in enumerate(islice(segments, first, None), first):
            try:
                found = segment.read(offset, max_bytes, limit)
            except LogClosedError:
                if offset < self.log_start_offset:  # retention deleted it meanwhile
                    raise OffsetOutOfRangeError(
                        offset, self.log_start_offset, self._log_end_offset
                    ) from None
                raise
            if found is not None:
                records, first_offset, next_offset = found
                return ReadResult(records, first_offset, next_offset, start, end)
            if i + 1 < len(segments) and offset < segments[i + 1].base_offset:
                # A sealed segment that ends short of its successor (cut or damaged on
                # disk): the offsets in between are lost, which a read must not skip.
                raise CorruptRecordError(
                    segment.path,
                    segment.size,
                    f"offsets {segment.next_offset} to {segments[i + 1].base_offset - 1} are "
                    f"missing: the segment ends at offset {segment.next_offset} but the next "
                    f"one starts at {segments[i + 1].base_offset}",
                )
        return ReadResult(b"", offset, offset, start, end)

    def iter_batch_headers(self, start_offset: int = 0) -> Iterator[BatchHeader]:
        """Stored batch headers from the batch holding `start_offset` to the current log end.

        A header scan (no CRC checks, no record decoding) for rebuilding state
        kept beside the log, such as producer sequences; the headers carry the
        stamped base offsets. Batches appended after the first item are not
        included; segments retention deletes meanwhile are skipped.
        """
        self._check_open()
        segments = self._segments
        end = self._log_end_offset
        first = max(bisect_right(segments, start_offset, key=_base_offset) - 1, 0)
        for i in range(first, len(segments)):
            segment_end = segments[i + 1].base_offset if i + 1 < len(segments) else end
            try:
                yield from segments[i].iter_headers(start_offset, min(segment_end, end))
            except LogClosedError:
                if self._closed:
                    raise
                # deleted by retention meanwhile: its batches are gone

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first batch whose max_timestamp >= timestamp_ms, or None."""
        self._check_open()
        for segment in self._segments:
            if segment.max_timestamp < timestamp_ms:
                continue
            try:
                found = segment.offset_for_timestamp(timestamp_ms)
            except LogClosedError:
                continue  # deleted by retention meanwhile
            if found is not None:
                return found
        return None

    # --- truncation and retention ----------------------------------------------------------------

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
                    holder = bisect_right(segments, offset, key=_base_offset) - 1
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

    def apply_retention(self) -> int:
        """Delete old sealed segments over retention.bytes or retention.ms; return how many.

        A closed log has nothing to retain: 0.
        """
        if self._closed:
            return 0
        now = self._now_ms()
        retention_bytes = self.config.retention_bytes
        retention_ms = self.config.retention_ms
        reasons: list[str] = []
        with self._structure_lock:
            segments = self._segments
            remaining = sum(segment.size for segment in segments)
            for segment in segments[:-1]:
                if retention_bytes >= 0 and remaining - segment.size >= retention_bytes:
                    reasons.append("retention.bytes")
                elif retention_ms >= 0 and now - segment.largest_timestamp() > retention_ms:
                    reasons.append("retention.ms")
                else:
                    break
                remaining -= segment.size
            doomed = segments[: len(reasons)]
            self._segments = segments[len(reasons) :]
        for segment, reason in zip(doomed, reasons, strict=True):
            try:
                segment.delete()
            except LogIOError as exc:
                # Out of the log already; a leftover file is found and retained again on restart.
                log.error("segment.delete_failed", file=segment.path, error=str(exc))
                continue
            log.info(
                "segment.deleted",
                file=segment.path,
                base_offset=segment.base_offset,
                next_offset=segment.next_offset,
                size=segment.size,
                reason=reason,
            )
        return len(doomed)

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


def _check_headers_cover(
    buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader]
) -> None:
    """Fail loudly when `headers` do not describe exactly the batches of `buf`."""
    if not headers:
        raise ValueError("append needs at least one batch")
    covered = sum(header.size for header in headers)
    if covered != len(buf):
        raise ValueError(f"headers cover {covered} bytes but the buffer holds {len(buf)}")
