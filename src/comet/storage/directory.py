"""The files of a log directory: creating it durably and finding its segments."""

from __future__ import annotations

import os
import re
from pathlib import Path

import structlog

from comet.storage.files import fsync_directory
from comet.storage.index_file import TMP_SUFFIX
from comet.storage.leader_epoch import CHECKPOINT_FILE
from comet.storage.segment import LOG_SUFFIX

log = structlog.get_logger(__name__)

_SEGMENT_FILE = re.compile(r"([0-9]{20})(\.log|\.index|\.timeindex)")
_MAX_BASE_OFFSET = (1 << 63) - 1


def make_directory(path: Path) -> None:
    """Create `path` and missing parents, fsyncing each parent that gained an entry."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)


# Files of a partition directory that are not segments.
PARTITION_FILES = frozenset({CHECKPOINT_FILE})


def segment_base_offsets(path: Path) -> list[int]:
    """Base offsets of the segments in `path`; strays and temp files are removed."""
    logs: set[int] = set()
    indexes: list[tuple[int, str]] = []
    for entry in os.scandir(path):
        if entry.name.endswith(TMP_SUFFIX):
            os.unlink(entry.path)
            log.info("log.temp_file_removed", file=entry.path)
            continue
        if entry.name in PARTITION_FILES:
            continue
        match = _SEGMENT_FILE.fullmatch(entry.name)
        if match is None or int(match[1]) > _MAX_BASE_OFFSET or not entry.is_file():
            log.warning("log.unknown_file_ignored", file=entry.path)
            continue
        base = int(match[1])
        if match[2] == LOG_SUFFIX:
            logs.add(base)
        else:
            indexes.append((base, entry.path))
    for base, stray in indexes:
        if base not in logs:
            os.unlink(stray)
            log.warning("log.stray_index_removed", file=stray)
    return sorted(logs)
