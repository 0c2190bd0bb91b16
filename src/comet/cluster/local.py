"""LocalCoordinator: cluster metadata for single-broker mode, kept in two files.

File format: `{meta_dir}/metadata.json`, a JSON object::

    {"format": 1, "cluster_id": "...", "topics": {"name": {"partitions": 3,
     "replication_factor": 1, "config": {"retention.ms": "..."}}}}

Committed offsets of consumer groups live beside it in
`{meta_dir}/offsets.json` (absent until the first commit)::

    {"format": 1, "groups": {"group": {"topic": {"0": 42, "1": 7}}}}

Each value is the next offset the group consumes in that partition (>= 0).
Offsets change far more often than topics, so they have their own file and
their own writer (see LocalOffsetStore): commits are kept in memory and made
durable by one atomic rewrite shared by every commit that arrived meanwhile.

Writes are atomic: the new content goes to a temp file that is fsynced, then
renamed over the old one, then the directory is fsynced. A crash leaves either
the old or the new file, never a mix. A file that does not parse or does not
match the format stops the broker with an error naming the file; nothing is
guessed. Offsets of a topic that no longer exists (a crash between deleting
the topic and rewriting the offsets) are dropped on start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog

from comet.cluster.coordinator import (
    BrokerRecord,
    CoordinatorError,
    MetadataListener,
    PartitionState,
    StaleStateError,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
OFFSETS_FORMAT_VERSION = 1
OFFSETS_FILE = "offsets.json"


class MetadataFileError(CoordinatorError):
    """The metadata file exists but cannot be read as Comet metadata."""


class OffsetsFileError(MetadataFileError):
    """The offsets file exists but cannot be read as Comet group offsets."""


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


class LocalCoordinator:
    """Coordinator for one broker with no etcd; see the module docstring for the file."""

    def __init__(self, meta_dir: str | os.PathLike[str]) -> None:
        self._dir = Path(meta_dir)
        self._path = self._dir / METADATA_FILE
        self._broker: BrokerRecord | None = None
        self._topics: dict[str, TopicSpec] = {}
        self._cluster_id = ""
        self._listeners: list[MetadataListener] = []
        self._lock = asyncio.Lock()
        # States changed through update_partition_state; the rest are derived
        # (one broker leads every partition at epoch 0). Not persisted: with a
        # single replica nothing depends on them across restarts.
        self._changed_states: dict[tuple[str, int], PartitionState] = {}
        self._next_producer_id = 0
        self._offsets = LocalOffsetStore(self._dir / OFFSETS_FILE, lambda: self._topics)

    @property
    def cluster_id(self) -> str:
        """Id of this single-broker cluster, fixed when the data directory is created."""
        return self._cluster_id

    async def start(self, broker: BrokerRecord) -> None:
        """Load the metadata file (or create it) and register `broker` as the only broker."""
        self._broker = broker
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._path.exists():
            self._load()
        else:
            self._cluster_id = uuid.uuid4().hex
            await self._save()
        await self._offsets.load()
        log.info("coordinator.local.started", file=str(self._path), topics=len(self._topics))

    def _load(self) -> None:
        try:
            doc = json.loads(self._path.read_bytes())
        except (OSError, ValueError) as exc:
            raise MetadataFileError(f"cannot read metadata file {self._path}: {exc}") from exc
        try:
            self._topics = _parse_document(doc)
            self._cluster_id = str(doc["cluster_id"])
            self._next_producer_id = int(doc.get("next_producer_id", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataFileError(
                f"metadata file {self._path} is not valid Comet metadata: {exc}"
            ) from exc

    async def _save(self) -> None:
        doc = {
            "format": FORMAT_VERSION,
            "cluster_id": self._cluster_id,
            "next_producer_id": self._next_producer_id,
            "topics": {
                t.name: {
                    "partitions": t.partitions,
                    "replication_factor": t.replication_factor,
                    "config": dict(t.config),
                }
                for t in sorted(self._topics.values(), key=lambda t: t.name)
            },
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        await asyncio.to_thread(write_file_atomically, self._path, data)

    async def close(self) -> None:
        """Wait for an offsets write in flight; everything else is already on disk."""
        self._listeners.clear()
        await self._offsets.close()

    async def list_brokers(self) -> list[BrokerRecord]:
        """The one broker of single-broker mode."""
        return [self._broker] if self._broker else []

    async def controller_id(self) -> str | None:
        """There is no controller in single-broker mode."""
        return None

    async def create_topic(self, spec: TopicSpec) -> list[PartitionState]:
        """Record a topic; every partition is led by this broker."""
        async with self._lock:
            if spec.name in self._topics:
                raise TopicExistsError(f"topic {spec.name!r} already exists")
            self._topics[spec.name] = spec
            try:
                await self._save()
            except BaseException:
                del self._topics[spec.name]
                raise
        await self._notify()
        return self._states(spec)

    async def delete_topic(self, name: str) -> None:
        """Forget a topic."""
        async with self._lock:
            spec = self._topics.pop(name, None)
            if spec is None:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            try:
                await self._save()
            except BaseException:
                self._topics[name] = spec
                raise
            for key in [k for k in self._changed_states if k[0] == name]:
                del self._changed_states[key]
        try:
            await self._offsets.drop_topic(name)
        except OSError as exc:
            # The topic is gone either way; its offsets are dropped in memory
            # now and from the file on the next write or the next start.
            log.error("offsets.write_failed", file=str(self._offsets.path), error=str(exc))
        await self._notify()

    async def list_topics(self) -> list[TopicSpec]:
        """Every topic, sorted by name."""
        return sorted(self._topics.values(), key=lambda t: t.name)

    async def get_topic(self, name: str) -> TopicSpec | None:
        """One topic, or None."""
        return self._topics.get(name)

    async def partition_states(self, topic: str) -> list[PartitionState]:
        """Every partition of `topic`, all on this broker."""
        spec = self._topics.get(topic)
        if spec is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return self._states(spec)

    def add_listener(self, listener: MetadataListener) -> None:
        """Await `listener` after every metadata change."""
        self._listeners.append(listener)

    async def update_partition_state(
        self, expected: PartitionState, new: PartitionState
    ) -> PartitionState:
        """Compare-and-set one partition state (in memory; see __init__)."""
        key = (expected.topic, expected.partition)
        async with self._lock:
            spec = self._topics.get(expected.topic)
            if spec is None or not 0 <= expected.partition < spec.partitions:
                raise TopicNotFoundError(f"{expected.topic}/{expected.partition} does not exist")
            current = self._changed_states.get(key) or self._states(spec)[expected.partition]
            if current.version != expected.version:
                raise StaleStateError(
                    f"{expected.topic}/{expected.partition}: state version is {current.version}, "
                    f"not {expected.version}"
                )
            stored = dataclasses.replace(new, version=current.version + 1)
            self._changed_states[key] = stored
        await self._notify()
        return stored

    async def allocate_producer_id(self) -> int:
        """The next producer id, persisted before it is handed out."""
        async with self._lock:
            pid = self._next_producer_id
            self._next_producer_id += 1
            try:
                await self._save()
            except BaseException:
                self._next_producer_id = pid
                raise
        return pid

    async def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store offsets of `group`; durable (fsynced) before it returns."""
        for (topic, partition), offset in offsets.items():
            spec = self._topics.get(topic)
            if spec is None:
                raise TopicNotFoundError(f"topic {topic!r} does not exist")
            if not 0 <= partition < spec.partitions:
                raise TopicNotFoundError(
                    f"topic {topic!r} has partitions 0..{spec.partitions - 1}, not {partition}"
                )
            if offset < 0:
                raise ValueError(f"offset of {topic}/{partition} must be >= 0, got {offset}")
        await self._offsets.commit(group, offsets)

    async def fetch_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """Every committed offset of `group`."""
        return self._offsets.fetch(group)

    async def list_groups(self) -> list[str]:
        """Groups with at least one committed offset, sorted."""
        return self._offsets.groups()

    async def delete_group_offsets(self, group: str) -> None:
        """Forget the offsets of `group`, durably."""
        await self._offsets.delete_group(group)

    def _states(self, spec: TopicSpec) -> list[PartitionState]:
        assert self._broker is not None, "start() first"
        me = (self._broker.id,)
        return [
            self._changed_states.get((spec.name, p))
            or PartitionState(spec.name, p, me, self._broker.id, 0, me)
            for p in range(spec.partitions)
        ]

    async def _notify(self) -> None:
        for listener in list(self._listeners):
            await listener()


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


def _parse_document(doc: Any) -> dict[str, TopicSpec]:
    if not isinstance(doc, dict):
        raise TypeError("top level must be an object")
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"format must be {FORMAT_VERSION}, found {doc.get('format')!r}")
    topics = doc["topics"]
    if not isinstance(topics, dict):
        raise TypeError("'topics' must be an object")
    out: dict[str, TopicSpec] = {}
    for name, entry in topics.items():
        partitions = entry["partitions"]
        rf = entry["replication_factor"]
        config: Mapping[str, str] = entry.get("config", {})
        if not (isinstance(partitions, int) and partitions >= 1):
            raise ValueError(f"topic {name!r}: partitions must be a positive integer")
        if not (isinstance(rf, int) and rf >= 1):
            raise ValueError(f"topic {name!r}: replication_factor must be a positive integer")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in config.items()):
            raise ValueError(f"topic {name!r}: config must map strings to strings")
        out[name] = TopicSpec(name, partitions, rf, dict(config))
    return out
