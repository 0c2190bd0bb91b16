"""LocalOffsetStore: committed offsets of consumer groups in single-broker mode.

File format: `{meta_dir}/offsets.json` (absent until the first commit)::

    {"format": 1, "groups": {"group": {"topic": {"0": 42, "1": 7}}}}

Each value is the next offset the group consumes in that partition (>= 0).
Offsets change far more often than topics, so they have their own file
beside the metadata file (see comet.cluster.local) and their own writer:
commits are kept in memory and made durable by one atomic rewrite shared by
every commit that arrived meanwhile.

The file is written atomically and a damaged one stops the broker (see
comet.cluster.local_files). Offsets of a topic that no longer exists (a
crash between deleting the topic and rewriting the offsets) are dropped on
start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog

from comet.cluster.coordinator import TopicSpec
from comet.cluster.local_files import MetadataFileError, write_file_atomically

log = structlog.get_logger(__name__)

OFFSETS_FORMAT_VERSION = 1
OFFSETS_FILE = "offsets.json"


class OffsetsFileError(MetadataFileError):
    """The offsets file exists but cannot be read as Comet group offsets."""


class LocalOffsetStore:
    """Committed group offsets in memory, persisted to one file by group commit.

    Every change bumps `_version`; `_durable` is the version whose offsets
    the file holds. A commit changes memory at once, then waits until
    `_durable` reaches its version. At most one writer task runs: it
    snapshots memory, rewrites the file atomically, and repeats while changes
    arrived during the write, so commits that arrive while a write is in
    flight share the next one. A commit that changes nothing still waits for
    the write in flight, which may be the one that carries its values.

    A failed write (a full disk) fails every change it was to carry, and
    every one that arrived meanwhile: their callers get the error, so memory
    rolls back to what a start would load from the file (`_on_disk`, less
    offsets of topics or partitions that are gone). Memory then matches the
    file again, so the current version counts as durable.
    """

    def __init__(self, path: Path, topics: Callable[[], Mapping[str, TopicSpec]]) -> None:
        self.path = path
        self._topics = topics  # the coordinator's current topics
        self._offsets: dict[str, dict[tuple[str, int], int]] = {}
        self._on_disk: dict[str, dict[tuple[str, int], int]] = {}  # what the file holds
        self._version = 0
        self._durable = 0
        self._writer: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Read the file if it exists, dropping offsets of topics or partitions that are gone."""
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise OffsetsFileError(f"cannot read offsets file {self.path}: {exc}") from exc
        try:
            loaded = _parse_offsets(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise OffsetsFileError(
                f"offsets file {self.path} is not valid Comet group offsets: {exc}"
            ) from exc
        self._on_disk = loaded
        self._offsets = _live_offsets(loaded, self._topics())
        stale = sum(map(len, loaded.values())) - sum(map(len, self._offsets.values()))
        if stale:
            log.warning("offsets.dropped_stale", file=str(self.path), count=stale)
            await self._changed()

    def fetch(self, group: str) -> dict[tuple[str, int], int]:
        """A copy of the offsets of `group`."""
        return dict(self._offsets.get(group, {}))

    def groups(self) -> list[str]:
        """Groups with offsets, sorted."""
        return sorted(self._offsets)

    async def commit(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Apply `offsets` to memory and wait until a write covers them."""
        current = self._offsets.get(group, {})
        if all(current.get(tp) == o for tp, o in offsets.items()):
            await self._durable_at(self._version)
            return
        self._offsets.setdefault(group, {}).update(offsets)
        await self._changed()

    async def delete_group(self, group: str) -> None:
        """Forget `group` and wait until the file no longer holds it."""
        if self._offsets.pop(group, None) is not None:
            await self._changed()

    async def drop_topic(self, topic: str) -> None:
        """Forget every offset of `topic` and wait until the file no longer holds them.

        Call it once `topic` is gone from the coordinator's topics: then a
        failed write cannot roll its offsets back into memory.
        """
        if self._forget(tp for tp in self._all_partitions() if tp[0] == topic):
            await self._changed()

    async def close(self) -> None:
        """Wait for the write in flight, if any."""
        writer = self._writer
        if writer is not None and not writer.done():
            try:
                await writer
            except OSError as exc:
                log.error("offsets.write_failed", file=str(self.path), error=str(exc))

    def _all_partitions(self) -> set[tuple[str, int]]:
        return {tp for offsets in self._offsets.values() for tp in offsets}

    def _forget(self, partitions: Iterable[tuple[str, int]]) -> bool:
        doomed = set(partitions)
        for group in list(self._offsets):
            offsets = self._offsets[group]
            for tp in doomed & offsets.keys():
                del offsets[tp]
            if not offsets:
                del self._offsets[group]
        return bool(doomed)

    async def _changed(self) -> None:
        self._version += 1
        await self._durable_at(self._version)

    async def _durable_at(self, version: int) -> None:
        while self._durable < version:
            writer = self._writer
            if writer is None or writer.done():
                writer = self._writer = asyncio.create_task(self._write(), name="offsets-write")
                # a failed write whose waiters were all cancelled must not be reported as
                # "exception never retrieved": the next commit starts a new writer anyway
                writer.add_done_callback(_consume_exception)
            await asyncio.shield(writer)

    async def _write(self) -> None:
        while self._durable < self._version:
            version = self._version
            snapshot = {group: dict(offsets) for group, offsets in self._offsets.items()}
            doc = {"format": OFFSETS_FORMAT_VERSION, "groups": _offsets_document(snapshot)}
            data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            try:
                await asyncio.to_thread(write_file_atomically, self.path, data)
            except OSError:
                # Here, before the task ends: every waiter that gets the error sees the rollback.
                self._offsets = _live_offsets(self._on_disk, self._topics())
                self._durable = self._version
                raise
            self._on_disk = snapshot
            self._durable = version


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _live_offsets(
    offsets: Mapping[str, Mapping[tuple[str, int], int]], topics: Mapping[str, TopicSpec]
) -> dict[str, dict[tuple[str, int], int]]:
    """A copy of `offsets` without topics or partitions that `topics` does not have."""
    out: dict[str, dict[tuple[str, int], int]] = {}
    for group, by_partition in offsets.items():
        kept = {
            (t, p): o
            for (t, p), o in by_partition.items()
            if t in topics and p < topics[t].partitions
        }
        if kept:
            out[group] = kept
    return out


def _offsets_document(
    offsets: Mapping[str, Mapping[tuple[str, int], int]],
) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for group, by_partition in offsets.items():
        topics: dict[str, dict[str, int]] = {}
        for (topic, partition), offset in by_partition.items():
            topics.setdefault(topic, {})[str(partition)] = offset
        out[group] = topics
    return out


def _parse_offsets(doc: Any) -> dict[str, dict[tuple[str, int], int]]:
    if not isinstance(doc, dict):
        raise TypeError("top level must be an object")
    if doc.get("format") != OFFSETS_FORMAT_VERSION:
        raise ValueError(f"format must be {OFFSETS_FORMAT_VERSION}, found {doc.get('format')!r}")
    groups = doc["groups"]
    if not isinstance(groups, dict):
        raise TypeError("'groups' must be an object")
    out: dict[str, dict[tuple[str, int], int]] = {}
    for group, topics in groups.items():
        if not isinstance(topics, dict):
            raise TypeError(f"group {group!r} must map topics to objects")
        offsets: dict[tuple[str, int], int] = {}
        for topic, partitions in topics.items():
            if not isinstance(partitions, dict):
                raise TypeError(f"group {group!r}, topic {topic!r} must map partitions to offsets")
            for key, offset in partitions.items():
                if not (key.isdigit() and key.isascii()):
                    raise ValueError(f"group {group!r}, topic {topic!r}: bad partition {key!r}")
                if not (isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0):
                    raise ValueError(
                        f"group {group!r}, {topic}/{key}: offset must be an integer >= 0, "
                        f"found {offset!r}"
                    )
                offsets[(topic, int(key))] = offset
        out[group] = offsets
    return out
