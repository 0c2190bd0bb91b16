"""Retention of a partition log: deleting whole sealed segments by size and by age.

Oldest first, a sealed segment is deleted while the partition would still
hold at least retention.bytes without it, or while its newest batch
timestamp (the file's mtime if batches carry none) is more than
retention.ms old; the first segment kept ends the walk, and -1 turns either
rule off. A segment leaves the log's segment list before its files are
deleted (.log first), so a read that started earlier finds it closed. A
deletion lost in a crash only brings an old segment back, and retention
deletes it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from comet.storage.config import LogConfig
from comet.storage.errors import LogIOError
from comet.storage.segment import LogSegment

log = structlog.get_logger(__name__)


class LogRetention:
    """Mixin of PartitionLog: apply_retention, which the broker runs periodically in a thread."""

    config: LogConfig
    _segments: tuple[LogSegment, ...]
    _structure_lock: threading.Lock
    _closed: bool
    _now_ms: Callable[[], int]

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
