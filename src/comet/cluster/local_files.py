"""Files of single-broker mode: the atomic rewrite and the error for an unreadable file.

Writes are atomic: the new content goes to a temp file that is fsynced, then
renamed over the old one, then the directory is fsynced. A crash leaves either
the old or the new file, never a mix. A file that does not parse or does not
match its format stops the broker with an error naming the file; nothing is
guessed.

Shared by the metadata file (comet.cluster.local), the offsets file
(comet.cluster.local_offsets) and the broker id file (comet.broker.log_manager).
"""

from __future__ import annotations

import os
from pathlib import Path

from comet.cluster.coordinator import CoordinatorError


class MetadataFileError(CoordinatorError):
    """The metadata file exists but cannot be read as Comet metadata."""


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: leave no half-written temp file behind
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
