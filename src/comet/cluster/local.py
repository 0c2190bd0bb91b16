"""LocalCoordinator: cluster metadata for single-broker mode, kept in one file.

File format: `{meta_dir}/metadata.json`, a JSON object::

    {"format": 1, "cluster_id": "...", "topics": {"name": {"partitions": 3,
     "replication_factor": 1, "config": {"retention.ms": "..."}}}}

Writes are atomic: the new content goes to a temp file that is fsynced, then
renamed over the old one, then the directory is fsynced. A crash leaves either
the old or the new file, never a mix. A file that does not parse or does not
match the format stops the broker with an error naming the file; nothing is
guessed.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from comet.cluster.coordinator import (
    BrokerRecord,
    CoordinatorError,
    PartitionState,
    TopicExistsError,
    TopicListener,
    TopicNotFoundError,
    TopicSpec,
)

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


class MetadataFileError(CoordinatorError):
    """The metadata file exists but cannot be read as Comet metadata."""


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
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
        self._listeners: list[TopicListener] = []
        self._lock = asyncio.Lock()

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
        log.info("coordinator.local.started", file=str(self._path), topics=len(self._topics))

    def _load(self) -> None:
        try:
            doc = json.loads(self._path.read_bytes())
        except (OSError, ValueError) as exc:
            raise MetadataFileError(f"cannot read metadata file {self._path}: {exc}") from exc
        try:
            self._topics = _parse_document(doc)
            self._cluster_id = str(doc["cluster_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataFileError(
                f"metadata file {self._path} is not valid Comet metadata: {exc}"
            ) from exc

    async def _save(self) -> None:
        doc = {
            "format": FORMAT_VERSION,
            "cluster_id": self._cluster_id,
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
        """Nothing to release: every change is already on disk."""
        self._listeners.clear()

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

    def add_topic_listener(self, listener: TopicListener) -> None:
        """Call `listener` after every change of the topic set."""
        self._listeners.append(listener)

    def _states(self, spec: TopicSpec) -> list[PartitionState]:
        assert self._broker is not None, "start() first"
        me = (self._broker.id,)
        return [
            PartitionState(spec.name, p, me, self._broker.id, 0, me) for p in range(spec.partitions)
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
