"""Small POSIX helpers the storage files share: complete writes and directory fsync."""

from __future__ import annotations

import os

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """os.write until every byte of `data` is written; return the count."""
    with memoryview(data) as view:
        total = len(view)
        done = os.write(fd, view)
        while done < total:
            done += os.write(fd, view[done:])
    return total


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that file creations, renames and unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
