"""Synchronous CometClient and the original module-level admin functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from comet import aio
from comet.aio.client import EARLIEST, LATEST, Acks
from comet.aio.types import ClusterMetadata, FetchResult, ProduceResult, TopicDescription, TopicInfo
from comet.client.loop_thread import LoopThread, shared_loop

T = TypeVar("T")


class CometClient:
    """Blocking twin of comet.aio.CometClient; every call runs on a background loop."""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        timeout: float = aio.client.DEFAULT_TIMEOUT_S,
        loop: LoopThread | None = None,
    ) -> None:
        self._loop = loop or shared_loop()
        self._aio: aio.CometClient = self._loop.run(_make_client(bootstrap, timeout))

    @property
    def aio(self) -> aio.CometClient:
        """The asyncio client underneath (usable only on the facade's loop)."""
        return self._aio

    def __enter__(self) -> CometClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; idempotent."""
        self._loop.run(self._aio.close())

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        exist_ok: bool = False,
    ) -> bool:
        """Create a topic; True if created, False if it existed and exist_ok is set."""
        return self._loop.run(
            self._aio.create_topic(name, partitions, replication_factor, config, exist_ok=exist_ok)
        )

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        self._loop.run(self._aio.delete_topic(name))

    def list_topics(self) -> list[TopicInfo]:
        """Every topic, sorted by name."""
        return self._loop.run(self._aio.list_topics())

    def describe_topic(self, name: str) -> TopicDescription:
        """Effective configuration and per-partition figures of a topic."""
        return self._loop.run(self._aio.describe_topic(name))

    def metadata(self, topics: Sequence[str] = ()) -> ClusterMetadata:
        """Brokers and partition placement."""
        return self._loop.run(self._aio.metadata(topics))

    def produce_batch(
        self, topic: str, partition: int, records: bytes, *, acks: Acks = "all", timeout_ms: int = 0
    ) -> ProduceResult:
        """Send framed RecordBatch v2 bytes to the partition leader."""
        return self._loop.run(
            self._aio.produce_batch(topic, partition, records, acks=acks, timeout_ms=timeout_ms)
        )

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1024 * 1024,
        max_wait_ms: int = 0,
    ) -> FetchResult:
        """Raw batches from `offset`, waiting up to max_wait_ms for data."""
        return self._loop.run(
            self._aio.fetch(topic, partition, offset, max_bytes=max_bytes, max_wait_ms=max_wait_ms)
        )

    def fetch_offsets(
        self, group: str, partitions: Mapping[str, Sequence[int]] | None = None
    ) -> dict[tuple[str, int], int]:
        """Committed offsets of a group (-1 where none)."""
        return self._loop.run(self._aio.fetch_offsets(group, partitions))

    def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit offsets for a group that has no live members (tools, resets)."""
        self._loop.run(self._aio.commit_offsets(group, offsets))

    def describe_group(self, group: str) -> Any:
        """State, generation, members, assignment and lag of a group."""
        return self._loop.run(self._aio.describe_group(group))

    def list_groups(self) -> list[Any]:
        """Every group the cluster knows."""
        return self._loop.run(self._aio.list_groups())

    def list_offsets(self, topic: str, partition: int, timestamp_ms: int = LATEST) -> int:
        """LATEST (-1), EARLIEST (-2) or the first offset at or after a ms timestamp."""
        return self._loop.run(self._aio.list_offsets(topic, partition, timestamp_ms))


async def _make_client(bootstrap: str | Sequence[str], call_timeout: float) -> aio.CometClient:
    return aio.CometClient(bootstrap, timeout=call_timeout)


def create_topic(
    addresses: str | Sequence[str], name: str, partitions: int = 1, replication_factor: int = 1
) -> bool:
    """Create a topic (the original API's create_topic); False if it already existed."""
    with CometClient(addresses) as client:
        return client.create_topic(name, partitions, replication_factor, exist_ok=True)


def list_topics(addresses: str | Sequence[str]) -> list[TopicInfo]:
    """List topics (the original API's list_topics)."""
    with CometClient(addresses) as client:
        return client.list_topics()


def delete_topic(addresses: str | Sequence[str], name: str) -> None:
    """Delete a topic (the original API's delete_topic)."""
    with CometClient(addresses) as client:
        client.delete_topic(name)


__all__ = ["EARLIEST", "LATEST", "CometClient", "create_topic", "delete_topic", "list_topics"]
