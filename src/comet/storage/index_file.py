"""File mechanics shared by the offset and time indexes of a segment.

An index is kept whole in memory; its file is an append-only copy that may
lag behind. Entries are appended to memory as batches are appended to the
log and copied to the file by `write_pending`, which the segment calls only
after the log bytes the entries point at were fdatasynced. So every entry on
disk points at durable log data, and after a crash the file holds a prefix
of the entries (possibly with a torn last entry) that loading cuts back to
its longest consistent part, or, for a sealed segment, rebuilds.

Not thread-safe by itself: the owning segment serialises access with its
lock.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import ClassVar

from comet.storage.errors import LogIOError, io_error
from comet.storage.files import O_CLOEXEC, write_all

OPEN_FLAGS = os.O_RDWR | os.O_CREAT | O_CLOEXEC
TMP_SUFFIX = ".tmp"


class IndexFile(ABC):
    """An in-memory index with an append-only file copy of fixed-size entries."""

    ENTRY_SIZE: ClassVar[int]

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._fd = -1
        self._written = 0  # entries already in the file

    # --- in-memory entries: implemented by each index ---------------------------------------

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _encode(self, start: int, end: int) -> bytes:
        """File bytes of entries [start, end)."""

    @abstractmethod
    def _drop_from(self, count: int) -> None:
        """Forget in-memory entries from index `count` on."""

    # --- file operations ------------------------------------------------------------------------

    def open(self, *, truncate: bool = False) -> bytes:
        """Open (creating) the file and return its current content."""
        flags = OPEN_FLAGS | (os.O_TRUNC if truncate else 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
            size = os.fstat(self._fd).st_size
            data = os.pread(self._fd, size, 0) if size else b""
        except OSError as exc:
            self.close()
            raise io_error(LogIOError, exc, "opening index", self.path) from exc
        return data

    @property
    def pending(self) -> bool:
        """Whether some in-memory entries are not in the file yet."""
        return self._written < len(self)

    def write_pending(self, count: int) -> None:
        """Copy entries [written, count) to the file (no fsync)."""
        count = min(count, len(self))
        if count <= self._written:
            return
        try:
            data = self._encode(self._written, count)
            os.pwrite(self._fd, data, self._written * self.ENTRY_SIZE)
        except OSError as exc:
            raise io_error(LogIOError, exc, "writing index", self.path) from exc
        self._written = count

    def sync(self) -> None:
        """Write every pending entry and fdatasync the file."""
        self.write_pending(len(self))
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise io_error(LogIOError, exc, "fdatasync of index", self.path) from exc

    def truncate(self, count: int) -> None:
        """Keep the first `count` entries in memory and in the file."""
        if count < len(self):
            self._drop_from(count)
        if count < self._written:
            try:
                os.ftruncate(self._fd, count * self.ENTRY_SIZE)
            except OSError as exc:
                raise io_error(LogIOError, exc, "truncating index", self.path) from exc
            self._written = count

    def discard_written(self) -> None:
        """Empty the file; every in-memory entry becomes pending for the next write_pending."""
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise io_error(LogIOError, exc, "truncating index", self.path) from exc
        self._written = 0

    def mark_loaded(self, count: int, file_size: int) -> None:
        """Record that the file holds the first `count` entries; cut anything after them."""
        self._written = count
        if file_size != count * self.ENTRY_SIZE:
            try:
                os.ftruncate(self._fd, count * self.ENTRY_SIZE)
            except OSError as exc:
                raise io_error(LogIOError, exc, "truncating index", self.path) from exc

    def rewrite(self) -> None:
        """Replace the file by all in-memory entries atomically (temp file, fsync, rename)."""
        tmp = self.path + TMP_SUFFIX
        try:
            fd = os.open(tmp, OPEN_FLAGS | os.O_TRUNC, 0o644)
            try:
                write_all(fd, self._encode(0, len(self)))
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self.close()
            self._fd = os.open(self.path, OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise io_error(LogIOError, exc, "rewriting index", self.path) from exc
        self._written = len(self)

    def close(self) -> None:
        """Close the file (entries stay in memory)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def delete(self) -> None:
        """Close and remove the file."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise io_error(LogIOError, exc, "deleting index", self.path) from exc
