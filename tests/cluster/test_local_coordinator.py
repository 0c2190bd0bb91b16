"""LocalCoordinator: the single-broker metadata store."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest

from comet.cluster import BrokerRecord, LocalCoordinator, TopicSpec, local_offsets
from comet.cluster.local import METADATA_FILE
from comet.cluster.local_files import MetadataFileError
from comet.cluster.local_offsets import OFFSETS_FILE, OffsetsFileError

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


async def test_listeners_run_after_each_change(tmp_path: Path) -> None:
    c = await started(tmp_path)
    seen: list[list[str]] = []

    async def listener() -> None:
        seen.append([t.name for t in await c.list_topics()])

    c.add_listener(listener)
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


# --- committed group offsets -------------------------------------------------


async def test_offsets_survive_a_restart(tmp_path: Path) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("orders", 3, 1))
    await c.commit_offsets("g1", {("orders", 0): 5, ("orders", 2): 9})
    await c.commit_offsets("g1", {("orders", 0): 7})
    await c.commit_offsets("g2", {("orders", 1): 1})
    await c.close()

    again = await started(tmp_path)
    assert await again.fetch_offsets("g1") == {("orders", 0): 7, ("orders", 2): 9}
    assert await again.fetch_offsets("g2") == {("orders", 1): 1}
    assert await again.fetch_offsets("nobody") == {}
    assert await again.list_groups() == ["g1", "g2"]


async def test_offsets_of_a_topic_deleted_before_a_crash_are_dropped_on_start(
    tmp_path: Path,
) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 1, 1))
    await c.commit_offsets("g", {("t", 0): 3})
    # as if the broker crashed after rewriting metadata.json but before offsets.json
    doc = json.loads((tmp_path / OFFSETS_FILE).read_bytes())
    doc["groups"]["g"]["vanished"] = {"0": 8}
    doc["groups"]["g"]["t"]["5"] = 8
    (tmp_path / OFFSETS_FILE).write_text(json.dumps(doc))

    again = await started(tmp_path)
    assert await again.fetch_offsets("g") == {("t", 0): 3}
    # and the file was rewritten, so a topic created later under that name starts clean
    assert json.loads((tmp_path / OFFSETS_FILE).read_bytes())["groups"] == {"g": {"t": {"0": 3}}}


async def test_delete_group_offsets(tmp_path: Path) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 1, 1))
    await c.commit_offsets("g", {("t", 0): 3})
    await c.delete_group_offsets("g")
    await c.delete_group_offsets("never-had-any")
    assert await c.list_groups() == []
    again = await started(tmp_path)
    assert await again.fetch_offsets("g") == {}


async def test_concurrent_commits_share_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 100, 1))
    writes: list[bytes] = []
    real = local_offsets.write_file_atomically

    def counting(path: Path, data: bytes) -> None:
        if path.name == OFFSETS_FILE:
            writes.append(data)
        real(path, data)

    monkeypatch.setattr(local_offsets, "write_file_atomically", counting)
    await asyncio.gather(*(c.commit_offsets(f"g{i % 3}", {("t", i): i}) for i in range(100)))
    assert 1 <= len(writes) <= 2
    # an unchanged commit does not rewrite the file
    await c.commit_offsets("g0", {("t", 0): 0})
    assert len(writes) <= 2
    again = await started(tmp_path)
    stored = [await again.fetch_offsets(g) for g in ("g0", "g1", "g2")]
    assert sum(len(offsets) for offsets in stored) == 100


async def test_a_failed_write_fails_its_commits_and_the_next_commit_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 1, 1))
    real = local_offsets.write_file_atomically
    failures = [OSError(28, "No space left on device")]

    def flaky(path: Path, data: bytes) -> None:
        if path.name == OFFSETS_FILE and failures:
            raise failures.pop()
        real(path, data)

    monkeypatch.setattr(local_offsets, "write_file_atomically", flaky)
    with pytest.raises(OSError, match="No space"):
        await c.commit_offsets("g", {("t", 0): 1})
    await c.commit_offsets("g", {("t", 0): 2})
    again = await started(tmp_path)
    assert await again.fetch_offsets("g") == {("t", 0): 2}


def fail_offsets_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every write of the offsets file fail as on a full disk; metadata still works."""
    real = local_offsets.write_file_atomically

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == OFFSETS_FILE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(local_offsets, "write_file_atomically", full_disk)


async def test_a_commit_that_cannot_be_written_leaves_the_offsets_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client was told RESOURCE_EXHAUSTED: a fetch must not return the offset anyway, and a
    restart must not be what takes it back."""
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("t", 2, 1))
    await c.commit_offsets("g", {("t", 0): 1, ("t", 1): 1})
    fail_offsets_writes(monkeypatch)
    results = await asyncio.gather(
        c.commit_offsets("g", {("t", 0): 5}),
        c.commit_offsets("new", {("t", 1): 3}),
        c.delete_group_offsets("g"),
        return_exceptions=True,
    )
    assert all(isinstance(r, OSError) and r.errno == errno.ENOSPC for r in results)
    assert await c.fetch_offsets("g") == {("t", 0): 1, ("t", 1): 1}
    assert await c.fetch_offsets("new") == {}
    assert await c.list_groups() == ["g"]

    monkeypatch.undo()
    await c.commit_offsets("g", {("t", 0): 1})  # what the file holds: nothing to write
    await c.commit_offsets("g", {("t", 0): 5})  # the retry is written, not taken as done
    again = await started(tmp_path)
    assert await again.fetch_offsets("g") == {("t", 0): 5, ("t", 1): 1}


async def test_offsets_of_a_deleted_topic_stay_dropped_after_failed_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await started(tmp_path)
    await c.create_topic(TopicSpec("gone", 1, 1))
    await c.create_topic(TopicSpec("kept", 1, 1))
    await c.commit_offsets("g", {("gone", 0): 4, ("kept", 0): 2})
    fail_offsets_writes(monkeypatch)
    await c.delete_topic("gone")  # the topic is deleted; the offsets file is rewritten later
    assert await c.fetch_offsets("g") == {("kept", 0): 2}
    with pytest.raises(OSError):
        await c.commit_offsets("g", {("kept", 0): 3})
    assert await c.fetch_offsets("g") == {("kept", 0): 2}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        json.dumps({"format": 2, "groups": {}}).encode(),
        json.dumps({"format": 1, "groups": {"g": {"t": {"zero": 1}}}}).encode(),
        json.dumps({"format": 1, "groups": {"g": {"t": {"0": -4}}}}).encode(),
        json.dumps({"format": 1, "groups": {"g": {"t": {"0": "4"}}}}).encode(),
    ],
)
async def test_a_damaged_offsets_file_is_named_not_guessed(tmp_path: Path, content: bytes) -> None:
    await (await started(tmp_path)).close()
    (tmp_path / OFFSETS_FILE).write_bytes(content)
    with pytest.raises(OffsetsFileError, match=OFFSETS_FILE):
        await started(tmp_path)
