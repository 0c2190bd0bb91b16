"""LocalCoordinator: the single-broker metadata store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comet.cluster import (
    BrokerRecord,
    LocalCoordinator,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)
from comet.cluster.local import METADATA_FILE, MetadataFileError

ME = BrokerRecord("b1", "127.0.0.1:6174")


async def started(path: Path) -> LocalCoordinator:
    coordinator = LocalCoordinator(path)
    await coordinator.start(ME)
    return coordinator


async def test_topics_persist_across_restarts(tmp_path: Path) -> None:
    c = await started(tmp_path)
    states = await c.create_topic(TopicSpec("orders", 3, 1, {"retention.ms": "1000"}))
    assert [s.partition for s in states] == [0, 1, 2]
    assert all(s.leader == "b1" and s.replicas == ("b1",) and s.isr == ("b1",) for s in states)
    cluster_id = c.cluster_id
    await c.close()

    again = await started(tmp_path)
    assert again.cluster_id == cluster_id
    assert await again.list_topics() == [TopicSpec("orders", 3, 1, {"retention.ms": "1000"})]
    assert len(await again.partition_states("orders")) == 3


async def test_duplicate_and_missing_topics(tmp_path: Path) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 1, 1))
    with pytest.raises(TopicExistsError):
        await c.create_topic(TopicSpec("t", 2, 1))
    await c.delete_topic("t")
    with pytest.raises(TopicNotFoundError):
        await c.delete_topic("t")
    with pytest.raises(TopicNotFoundError):
        await c.partition_states("t")
    assert await c.get_topic("t") is None


async def test_listeners_run_after_each_change(tmp_path: Path) -> None:
    c = await started(tmp_path)
    seen: list[list[str]] = []

    async def listener() -> None:
        seen.append([t.name for t in await c.list_topics()])

    c.add_topic_listener(listener)
    await c.create_topic(TopicSpec("a", 1, 1))
    await c.create_topic(TopicSpec("b", 1, 1))
    await c.delete_topic("a")
    assert seen == [["a"], ["a", "b"], ["b"]]


async def test_single_broker_mode_has_one_broker_and_no_controller(tmp_path: Path) -> None:
    c = await started(tmp_path)
    assert await c.list_brokers() == [ME]
    assert await c.controller_id() is None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        json.dumps({"format": 99, "cluster_id": "x", "topics": {}}).encode(),
        json.dumps(
            {
                "format": 1,
                "cluster_id": "x",
                "topics": {"t": {"partitions": 0, "replication_factor": 1}},
            }
        ).encode(),
    ],
)
async def test_a_damaged_metadata_file_is_named_not_guessed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / METADATA_FILE).write_bytes(content)
    with pytest.raises(MetadataFileError, match=METADATA_FILE):
        await started(tmp_path)


async def test_writes_leave_no_temp_file(tmp_path: Path) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 1, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [METADATA_FILE]
