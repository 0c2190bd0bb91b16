"""The data directory: which partition logs exist on disk, and their upkeep.

Layout::

    {data_dir}/@meta/            broker-local metadata ("@" is not legal in a
                                 topic name, so no topic can collide with it)
    {data_dir}/@meta/lock        flock'ed while a broker uses the directory
    {data_dir}/{topic}/{partition}/  one PartitionLog each

Also runs the background upkeep: retention checks, and the periodic fsync
of the "interval" flush policy.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import structlog

from comet.broker.validation import TOPIC_NAME_RE
from comet.cluster.local_files import write_file_atomically
from comet.storage import LogConfig, PartitionLog

log = structlog.get_logger(__name__)

META_DIR = "@meta"
LOCK_FILE = "lock"


BROKER_ID_FILE = "broker_id"


MAX_BROKER_ID_LENGTH = 255


class BrokerIdFileError(ValueError):
    """The broker id file holds something that is not a broker id."""


def load_or_create_broker_id(data_dir: Path) -> str:
    """The broker id kept in the data directory, created (a UUID) on first start.

    A broker that restarts without --broker-id keeps its identity, so its
    partitions and offsets stay its own. The file is written atomically, so
    an empty one was never finished and gets a new id; one whose content is
    not an id (1-255 printable characters, no spaces) is refused rather
    than replaced, since a new identity would orphan the old one's replicas.
    """
    path = data_dir / META_DIR / BROKER_ID_FILE
    if path.exists():
        raw = path.read_bytes()
        try:
            value = raw.decode().strip()
        except UnicodeDecodeError:
            value = None
        if value is None or (value and not _is_broker_id(value)):
            raise BrokerIdFileError(
                f"broker id file {path} is damaged ({raw[:40]!r}): restore it, pass "
                "--broker-id, or delete it to start as a new broker"
            )
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = str(uuid.uuid4())
    write_file_atomically(path, (value + "\n").encode())
    return value


def _is_broker_id(value: str) -> bool:
    return (
        len(value) <= MAX_BROKER_ID_LENGTH
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


class DataDirLockedError(RuntimeError):
    """Another process holds the data directory."""


class LogManager:
    """Opens, closes and deletes partition logs under one data directory."""

    def __init__(self, data_dir: Path, defaults: LogConfig) -> None:
        self.data_dir = data_dir
        self.defaults = defaults
        self._lock_fd: int | None = None
        self._logs: dict[tuple[str, int], PartitionLog] = {}

    @property
    def meta_dir(self) -> Path:
        """Directory for broker-local metadata files."""
        return self.data_dir / META_DIR

    def lock(self) -> None:
        """Create the data directory if needed and lock it against a second broker."""
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.meta_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {self.data_dir} is in use by another comet process"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the data directory lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def topic_config(self, overrides: Mapping[str, str]) -> LogConfig:
        """Broker defaults with a topic's overrides applied."""
        return self.defaults.with_overrides(overrides) if overrides else self.defaults

    def open_log(self, topic: str, partition: int, overrides: Mapping[str, str]) -> PartitionLog:
        """Open (creating or recovering) the log of one partition."""
        key = (topic, partition)
        existing = self._logs.get(key)
        if existing is not None:
            return existing
        plog = PartitionLog.open(
            self.data_dir / topic / str(partition), self.topic_config(overrides)
        )
        self._logs[key] = plog
        return plog

    def logs(self) -> Iterator[tuple[tuple[str, int], PartitionLog]]:
        """Every open log with its (topic, partition)."""
        return iter(list(self._logs.items()))

    def topics_on_disk(self) -> set[str]:
        """Names of topic directories present in the data directory."""
        if not self.data_dir.exists():
            return set()
        return {
            p.name
            for p in self.data_dir.iterdir()
            if p.is_dir() and TOPIC_NAME_RE.fullmatch(p.name)
        }

    async def delete_topic(self, topic: str) -> None:
        """Close every log of `topic` and remove its directory."""
        for key, plog in list(self._logs.items()):
            if key[0] == topic:
                del self._logs[key]
                await asyncio.to_thread(plog.close)
        path = self.data_dir / topic
        if path.exists():
            await asyncio.to_thread(shutil.rmtree, path, True)
        log.info("topic.files_deleted", topic=topic, path=str(path))

    def apply_retention(self) -> int:
        """Run retention on every log; return the number of segments deleted."""
        deleted = 0
        for (topic, partition), plog in self.logs():
            n = plog.apply_retention()
            if n:
                log.info("retention.deleted", topic=topic, partition=partition, segments=n)
            deleted += n
        return deleted

    async def flush_all(self) -> None:
        """fdatasync every open log (off the event loop)."""
        for (topic, partition), plog in self.logs():
            try:
                await asyncio.to_thread(plog.flush)
            except OSError as exc:
                log.error("log.flush_failed", topic=topic, partition=partition, error=str(exc))

    async def close(self) -> None:
        """Flush and close every log, then release the lock."""
        logs = list(self._logs.values())
        self._logs.clear()
        for plog in logs:
            try:
                await asyncio.to_thread(plog.close)
            except Exception as exc:
                log.error("log.close_failed", error=str(exc))
        self.unlock()
