"""The .log file of a segment: appends that roll back on failure, preads, truncation, fsync."""

from __future__ import annotations

import contextlib
import os

import structlog

from comet.records import BATCH_HEADER_SIZE, BatchHeader, parse_header
from comet.storage.batch_scan import SCAN_CHUNK, BatchScanner
from comet.storage.errors import (
    LogFlushError,
    LogIOError,
    LogReadError,
    LogWriteError,
    io_error,
)
from comet.storage.files import O_CLOEXEC, write_all

log = structlog.get_logger(__name__)


class LogFile:
    """An open .log file and its size; every OSError leaves as a LogIOError naming the file.

    Opened with O_APPEND, so a write after a rolled-back one lands at the
    rolled-back end. Not thread-safe by itself: LogSegment serialises calls
    with its lock, and fsyncs run on a dup'ed descriptor (see `dup`) outside
    that lock.
    """

    __slots__ = ("_fd", "path", "size")

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self._fd = -1

    def open(self, *, create: bool) -> None:
        """Open the file (creating or emptying it with `create`) and read its size."""
        flags = os.O_RDWR | os.O_APPEND | O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_TRUNC
        try:
            self._fd = os.open(self.path, flags, 0o644)
            self.size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise io_error(LogIOError, exc, "opening", self.path) from exc

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data` at the end; on failure cut the file back and raise LogWriteError.

        The error's `rolled_back` is False when even cutting back failed.
        """
        try:
            write_all(self._fd, data)
        except OSError as exc:
            error = io_error(LogWriteError, exc, "appending to", self.path)
            try:
                os.ftruncate(self._fd, self.size)
            except OSError as cut_exc:
                error.rolled_back = False
                log.error("segment.rollback_failed", file=self.path, error=str(cut_exc))
            raise error from exc
        self.size += len(data)

    def pread(self, size: int, position: int) -> bytes:
        """Up to `size` bytes from `position`."""
        try:
            return os.pread(self._fd, size, position)
        except OSError as exc:
            raise io_error(LogReadError, exc, "reading", self.path) from exc

    def header_at(self, position: int) -> BatchHeader | None:
        """The batch header at `position`, or None if the file ends before a whole header."""
        data = self.pread(BATCH_HEADER_SIZE, position)
        return parse_header(data) if len(data) == BATCH_HEADER_SIZE else None

    def scanner(
        self,
        start: int,
        next_offset: int,
        *,
        verify_crc: bool,
        end: int | None = None,
        chunk_size: int = SCAN_CHUNK,
    ) -> BatchScanner:
        """A BatchScanner over [start, end or size) expecting `next_offset` first."""
        return BatchScanner(
            self._fd,
            self.path,
            start,
            self.size if end is None else end,
            next_offset,
            verify_crc=verify_crc,
            chunk_size=chunk_size,
        )

    def truncate(self, size: int, *, durable: bool) -> None:
        """Cut the file to `size` bytes, fsyncing the cut if `durable`."""
        try:
            os.ftruncate(self._fd, size)
            if durable:
                os.fsync(self._fd)
        except OSError as exc:
            raise io_error(LogWriteError, exc, "truncating", self.path) from exc
        self.size = size

    def dup(self) -> int:
        """A duplicate descriptor that stays valid even if the file is closed meanwhile."""
        try:
            return os.dup(self._fd)
        except OSError as exc:
            raise io_error(LogIOError, exc, "dup of", self.path) from exc

    def fdatasync_dup(self, fd: int) -> None:
        """fdatasync through `fd` (from `dup`) and close it; LogFlushError on failure."""
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise io_error(LogFlushError, exc, "fdatasync of", self.path) from exc
        finally:
            os.close(fd)

    def mtime_ms(self) -> int | None:
        """Last modification time in ms, None if unknown."""
        try:
            return int(os.stat(self.path).st_mtime * 1000)
        except OSError:
            return None

    def close(self) -> None:
        """Close the descriptor; idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def delete(self) -> None:
        """Close and unlink the file."""
        self.close()
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        except OSError as exc:
            raise io_error(LogIOError, exc, "deleting", self.path) from exc
