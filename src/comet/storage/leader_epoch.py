"""The leader-epoch checkpoint of a partition: where each leader epoch's batches begin.

File `{partition_dir}/leader-epoch-checkpoint`, text, Kafka's layout::

    0                 format version
    N                 number of entries
    epoch start       N lines: a leader epoch and the offset of its first batch

Entries are strictly increasing in epoch and non-decreasing in start offset.
A follower that learns of a new leader asks it for the end offset of the
follower's latest epoch (the start of the next epoch on the leader) and
truncates its log there, so batches a deposed leader wrote in an epoch the
new leader never saw are dropped before fetching resumes.

The file is replaced atomically (temp file, fsync, rename, directory fsync)
on every change; changes happen once per leadership change, not per batch.
It is derived data: when it is missing, does not parse or contradicts the
log, it is rebuilt from the partition_leader_epoch field of every batch
header in the log, and on open it is cut at the log end (a crash can leave
an entry whose batches did not survive recovery); see `recover_checkpoint`.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import structlog

from comet.storage.errors import CorruptRecordError
from comet.storage.files import O_CLOEXEC, fsync_directory, write_all
from comet.storage.segment import LogSegment, locate_segment

log = structlog.get_logger(__name__)

CHECKPOINT_FILE = "leader-epoch-checkpoint"
FORMAT_VERSION = 0
NO_EPOCH = -1


class LeaderEpochFileError(ValueError):
    """The checkpoint file does not follow its format (it is then rebuilt from the log)."""


class LeaderEpochCache:
    """Epoch -> start offset entries of one partition, persisted in its directory."""

    def __init__(self, directory: Path, entries: Iterable[tuple[int, int]] = ()) -> None:
        self.path = directory / CHECKPOINT_FILE
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for epoch, start in entries:
            self._epochs.append(epoch)
            self._starts.append(start)

    @classmethod
    def load(cls, directory: Path) -> LeaderEpochCache | None:
        """The cache from its file; None when the file is missing or damaged."""
        path = directory / CHECKPOINT_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            log.warning("leader_epoch.checkpoint_invalid", file=str(path), error=str(exc))
            return None
        try:
            return cls(directory, _parse(text))
        except LeaderEpochFileError as exc:
            log.warning("leader_epoch.checkpoint_invalid", file=str(path), error=str(exc))
            return None

    @property
    def entries(self) -> list[tuple[int, int]]:
        """(epoch, start offset) pairs, oldest first (a copy)."""
        return list(zip(self._epochs, self._starts, strict=True))

    @property
    def latest_epoch(self) -> int:
        """The newest epoch with batches in the log, or NO_EPOCH (-1)."""
        return self._epochs[-1] if self._epochs else NO_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` begins at `start_offset` if it is newer than the latest.

        Returns True when the checkpoint changed (and was written).
        """
        if epoch <= self.latest_epoch or epoch < 0:
            return False
        if self._starts and start_offset < self._starts[-1]:
            raise ValueError(
                f"{self.path}: epoch {epoch} cannot start at {start_offset}, before epoch "
                f"{self._epochs[-1]} at {self._starts[-1]}"
            )
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self._write()
        return True

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest epoch <= `epoch`, the offset where it ends) as a leader answers followers.

        The end of an epoch is the start of the next newer one, or the log end
        for the latest. Without any epoch <= `epoch`: (NO_EPOCH, NO_EPOCH).
        """
        i = bisect_right(self._epochs, epoch) - 1
        if i < 0:
            return NO_EPOCH, NO_EPOCH
        end = self._starts[i + 1] if i + 1 < len(self._starts) else log_end_offset
        return self._epochs[i], end

    def truncate_from_end(self, offset: int) -> None:
        """Forget epochs that start at or after `offset` (the log was cut there)."""
        keep = len(self._starts)
        while keep and self._starts[keep - 1] >= offset:
            keep -= 1
        if keep != len(self._starts):
            del self._epochs[keep:], self._starts[keep:]
            self._write()

    def _write(self) -> None:
        lines = [str(FORMAT_VERSION), str(len(self._epochs))]
        lines += [f"{e} {s}" for e, s in zip(self._epochs, self._starts, strict=True)]
        data = ("\n".join(lines) + "\n").encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC, 0o644)
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)

    def save(self) -> None:
        """Write the checkpoint file now (after a rebuild)."""
        self._write()


def recover_checkpoint(directory: Path, segments: Sequence[LogSegment]) -> LeaderEpochCache:
    """The checkpoint of a log being opened, rebuilt from batch headers when needed.

    A checkpoint that parses is still checked against the log (a few
    header reads): a crash between appending a new epoch's first batch and
    writing the checkpoint, or a file restored from a backup, leaves one
    that no longer describes the log, and followers would truncate by it.
    The result is cut at the log end.
    """
    start, end = segments[0].base_offset, segments[-1].next_offset
    cache = LeaderEpochCache.load(directory)
    problem = None
    if cache is not None:
        problem = checkpoint_problem(cache.entries, start, end, partial(_batch_epoch, segments))
    if problem is not None:
        log.warning("leader_epoch.checkpoint_stale", file=str(cache.path), reason=problem)
        cache = None
    if cache is None:
        entries: list[tuple[int, int]] = []
        for segment in segments:
            for epoch, first in segment.epoch_starts():
                if epoch >= 0 and (not entries or epoch > entries[-1][0]):
                    entries.append((epoch, first))
        cache = LeaderEpochCache(directory, entries)
        if entries:
            cache.save()
            log.info("leader_epoch.rebuilt", directory=str(directory), epochs=len(entries))
    cache.truncate_from_end(end)
    return cache


def _batch_epoch(segments: Sequence[LogSegment], offset: int) -> tuple[int, int] | None:
    """(base offset, leader epoch) of the batch holding `offset`; None if unreadable."""
    segment = segments[locate_segment(segments, offset)]
    try:
        return segment.batch_epoch(offset)
    except CorruptRecordError:
        return None


def checkpoint_problem(
    entries: list[tuple[int, int]],
    start: int,
    end: int,
    batch_epoch: Callable[[int], tuple[int, int] | None],
) -> str | None:
    """Why checkpoint `entries` disagree with the log [start, end), or None.

    `batch_epoch(offset)` gives (base offset, leader epoch) of the batch
    holding an offset, None when it cannot be read (not held against the
    checkpoint). Checks where each entry's epoch begins and the epochs of
    the first and last batches: a few header reads, not a scan.
    """
    entries = [(epoch, offset) for epoch, offset in entries if offset < end]
    if end <= start:
        return None
    for epoch, offset in entries:
        if offset < start:
            continue
        found = batch_epoch(offset)
        if found is not None and found != (offset, epoch):
            return f"epoch {epoch} should start at {offset}; the batch there is {found}"
        before = batch_epoch(offset - 1) if offset > start else None
        if before is not None and before[1] >= epoch:
            return f"epoch {epoch} starts at {offset} but the batch before has {before[1]}"
    for offset in (start, end - 1):
        found = batch_epoch(offset)
        listed = max((e for e, o in entries if o <= offset), default=NO_EPOCH)
        if found is not None and found[1] >= 0 and found[1] != listed:
            return f"the batch at {found[0]} has epoch {found[1]}, the checkpoint says {listed}"
    return None


def _parse(text: str) -> list[tuple[int, int]]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise LeaderEpochFileError("fewer than 2 lines")
    try:
        version, count = int(lines[0]), int(lines[1])
    except ValueError as exc:
        raise LeaderEpochFileError(f"bad header: {exc}") from None
    if version != FORMAT_VERSION:
        raise LeaderEpochFileError(f"format version {version} is not {FORMAT_VERSION}")
    if count != len(lines) - 2:
        raise LeaderEpochFileError(f"header says {count} entries, found {len(lines) - 2}")
    entries = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != 2:
            raise LeaderEpochFileError(f"entry {line!r} is not 'epoch start_offset'")
        try:
            epoch, start = int(parts[0]), int(parts[1])
        except ValueError:
            raise LeaderEpochFileError(f"entry {line!r} is not two integers") from None
        if epoch < 0 or start < 0:
            raise LeaderEpochFileError(f"entry {line!r} has a negative number")
        if entries and (epoch <= entries[-1][0] or start < entries[-1][1]):
            raise LeaderEpochFileError(f"entry {line!r} does not follow {entries[-1]}")
        entries.append((epoch, start))
    return entries
