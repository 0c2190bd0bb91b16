"""Exceptions of the storage engine.

Every error a caller may have to handle derives from `StorageError`. OS-level
failures are mapped to `LogIOError` subclasses here, at the storage boundary;
they are also `OSError`s (with the original errno) so code that already
guards disk work with `except OSError` keeps working.
"""

from __future__ import annotations

import os


class StorageError(Exception):
    """Base class of every error raised by `comet.storage`."""


# --- Caller errors: the request cannot be served as asked ------------------------------------


class OffsetOutOfRangeError(StorageError):
    """A read asked for an offset outside [log_start_offset, log_end_offset]."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is out of range: the log holds offsets "
            f"[{log_start_offset}, {log_end_offset}) and the next append gets {log_end_offset}"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class InvalidOffsetError(StorageError):
    """Already-stamped batches do not continue the log at log_end_offset without gaps."""


class RecordTooLargeError(StorageError):
    """One append is larger than max.message.bytes."""


class InvalidConfigError(StorageError, ValueError):
    """A topic config key is unknown or its value breaks the key's rule."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class LogClosedError(StorageError):
    """The log (or the segment an operation reached) was closed or deleted."""


# --- Stored data that is not what it should be ---------------------------------------------


class CorruptRecordError(StorageError):
    """The batch a read must start with fails its CRC or framing; it is never served."""

    def __init__(self, path: str | os.PathLike[str], position: int, reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: corrupt batch at byte {position}: {reason}")
        self.path = os.fspath(path)
        self.position = position


# --- Disk I/O failures -----------------------------------------------------------------------


class LogIOError(StorageError, OSError):
    """A read, write, fsync or file operation on a log file failed (errno kept)."""

    def __init__(self, errno: int | None, message: str, path: str | os.PathLike[str]) -> None:
        OSError.__init__(self, errno, message)
        self.path = os.fspath(path)

    def __str__(self) -> str:
        return f"{self.strerror} [errno {self.errno}]" if self.errno else str(self.strerror)


class LogWriteError(LogIOError):
    """Appending to a segment failed (e.g. ENOSPC); the segment was rolled back."""

    rolled_back = True  # False when cutting the partial write off failed too


class LogReadError(LogIOError):
    """Reading a segment or index file failed."""


class LogFlushError(LogIOError):
    """fdatasync failed: durability of unflushed data is unknown, the log goes offline."""


class LogOfflineError(StorageError):
    """An earlier unrecoverable I/O failure took the log offline; reopen it to recover."""


def io_error(
    cls: type[LogIOError], exc: OSError, action: str, path: str | os.PathLike[str]
) -> LogIOError:
    """Build `cls` for `exc` raised while doing `action` on `path`."""
    reason = exc.strerror or str(exc)
    return cls(exc.errno, f"{action} {os.fspath(path)} failed: {reason}", path)
