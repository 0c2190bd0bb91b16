"""LocalCoordinator: cluster metadata for single-broker mode, kept in two files.

File format: `{meta_dir}/metadata.json`, a JSON object::

    {"format": 1, "cluster_id": "...", "topics": {"name": {"partitions": 3,
     "replication_factor": 1, "config": {"retention.ms": "..."}}}}

Committed offsets of consumer groups live beside it in `{meta_dir}/offsets.json`,
kept by LocalOffsetStore (comet.cluster.local_offsets, which has its format).

Both files are written atomically, and one that does not parse or does not
match its format stops the broker with an error naming the file; nothing is
guessed (see comet.cluster.local_files).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from comet.cluster.coordinator import (
    BrokerRecord,
    MetadataListener,
    PartitionState,
    StaleStateError,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)
from comet.cluster.local_files import MetadataFileError, write_file_atomically
from comet.cluster.local_offsets import (
    OFFSETS_FILE,
    OFFSETS_FORMAT_VERSION,
    LocalOffsetStore,
    OffsetsFileError,
)

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "OFFSETS_FILE",
    "OFFSETS_FORMAT_VERSION",
    "LocalCoordinator",
    "LocalOffsetStore",
    "MetadataFileError",
    "OffsetsFileError",
    "write_file_atomically",
]

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


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
