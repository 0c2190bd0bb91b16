"""A real broker whose data directory runs out of space.

The data directory is a small tmpfs (mounted here; the tests run as root,
locally and in CI). Produces go on until the disk is full: the failing one
must answer RESOURCE_EXHAUSTED naming the partition and "No space left",
leave the log end offset and every byte on disk as they were, and the
broker must stay up, keep serving reads and accept produces again once
space is freed. A restart afterwards finds exactly the acknowledged batches.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from comet.cli.local_broker import LocalBroker
from comet.records import decode_batches, encode_batch, validate_batches
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

pytestmark = pytest.mark.integration

TMPFS_KB = 768
TOPIC = "full"
ROLLING = "full-rolling"  # small segments: the disk fills up around rolls
VALUE_BYTES = 6000
SEGMENT_BYTES = 20_000  # ROLLING rolls every few batches
ROOM_BYTES = 80 * 1024  # left free beside the ballast file: a dozen produces
MAX_PRODUCES = 200  # far more than fit: the loop must end by a refusal
DEADLINE_S = 10.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A TMPFS_KB tmpfs mounted at tmp_path/data, unmounted afterwards."""
    mountpoint = tmp_path / "data"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_KB}k", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a {TMPFS_KB}k tmpfs at {mountpoint} (the disk-full test needs root "
            f"and mount permission): {done.stderr.strip() or done.returncode}"
        )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def produce(
    stub: broker_pb2_grpc.BrokerServiceStub, topic: str, tag: int
) -> pb.ProduceBatchResponse:
    batch = encode_batch([(b"k%d" % tag, os.urandom(VALUE_BYTES // 2).hex().encode())])
    request = pb.ProduceBatchRequest(topic=topic, partition=0, records=batch, acks=-1)
    return stub.ProduceBatch(request, timeout=DEADLINE_S)


def log_end(stub: broker_pb2_grpc.BrokerServiceStub, topic: str) -> int:
    request = pb.ListOffsetsRequest(topic=topic, partition=0, timestamp_ms=-1)
    return stub.ListOffsets(request, timeout=DEADLINE_S).offset


def read_all(stub: broker_pb2_grpc.BrokerServiceStub, topic: str) -> list[bytes]:
    """Every record key of the partition, every fetched batch CRC-checked."""
    keys, offset = [], 0
    for _ in range(1000):
        request = pb.FetchRequest(topic=topic, partition=0, offset=offset, max_bytes=1 << 20)
        records = stub.Fetch(request, timeout=DEADLINE_S).records
        if not records:
            return keys
        validate_batches(records, producer=False)
        for record in decode_batches(records, offset):
            keys.append(record.key)
            offset = record.offset + 1
    raise AssertionError("the partition never ended")


def files_of(data: Path, topic: str) -> dict[str, int]:
    """Size of every file of the partition's directory."""
    return {p.name: p.stat().st_size for p in sorted((data / topic / "0").iterdir())}


def fill_until_refused(
    stub: broker_pb2_grpc.BrokerServiceStub, data: Path, topic: str, first_tag: int
) -> tuple[list[bytes], grpc.RpcError]:
    """Produce until a produce fails; check it changed nothing. (acked keys, the error)."""
    acked = []
    for tag in range(first_tag, first_tag + MAX_PRODUCES):
        end, files = log_end(stub, topic), files_of(data, topic)
        try:
            reply = produce(stub, topic, tag)
        except grpc.RpcError as exc:
            assert log_end(stub, topic) == end, "a refused produce moved the log end"
            after = files_of(data, topic)
            grown = {n: (files.get(n), s) for n, s in after.items() if n.endswith(".log")}
            assert all(
                s == files.get(n) or not s for n, s in after.items() if n.endswith(".log")
            ), f"a refused produce left bytes in the log: {grown}"
            return acked, exc
        assert reply.base_offset == end
        acked.append(b"k%d" % tag)
    raise AssertionError(f"{MAX_PRODUCES} produces of {VALUE_BYTES} bytes fit a {TMPFS_KB}k disk")


def test_a_full_disk_refuses_produces_cleanly_and_recovers(small_disk: Path, tmp_path: Path):
    data = small_disk
    broker = LocalBroker(data, log_path=tmp_path / "broker.log")
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_pb2_grpc.BrokerServiceStub(channel)
            stub.CreateTopic(pb.CreateTopicRequest(name=TOPIC, partitions=1), timeout=DEADLINE_S)
            config = {"segment.bytes": str(SEGMENT_BYTES)}
            request = pb.CreateTopicRequest(name=ROLLING, partitions=1, config=config)
            stub.CreateTopic(request, timeout=DEADLINE_S)
            acked: dict[str, list[bytes]] = {TOPIC: [], ROLLING: []}
            for topic in (TOPIC, ROLLING):
                produce(stub, topic, 0)
                acked[topic].append(b"k0")
            free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
            ballast = data / "ballast"
            ballast.write_bytes(b"\0" * (free - ROOM_BYTES))

            keys, error = fill_until_refused(stub, data, ROLLING, 1)
            acked[ROLLING] += keys
            assert len(keys) >= 3, f"only {len(keys)} produces fit in {ROOM_BYTES} bytes"
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert f"{ROLLING}/0" in error.details(), error.details()
            assert "No space left" in error.details(), error.details()
            keys, error = fill_until_refused(stub, data, TOPIC, 1)
            acked[TOPIC] += keys
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert f"{TOPIC}/0" in error.details(), error.details()

            # writes of broker metadata fail the same way, and change nothing
            create = pb.CreateTopicRequest(name="created-on-a-full-disk", partitions=3)
            commit = pb.CommitOffsetsRequest(
                group="g", generation=-1, offsets=[pb.PartitionOffset(topic=TOPIC, offset=1)]
            )
            for call, request in (("CreateTopic", create), ("CommitOffsets", commit)):
                with pytest.raises(grpc.RpcError) as refused:
                    getattr(stub, call)(request, timeout=DEADLINE_S)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, call
                assert "no space left" in refused.value.details(), refused.value.details()
            names = stub.ListTopics(pb.ListTopicsRequest(), timeout=DEADLINE_S).topics
            assert sorted(t.name for t in names) == sorted([TOPIC, ROLLING])
            assert not list(data.rglob("*.tmp")), "a failed write left a temp file"

            # the broker stays up and serves reads of everything acknowledged
            for topic in (TOPIC, ROLLING):
                assert read_all(stub, topic) == acked[topic]

            ballast.unlink()  # space again: both partitions take produces at their log end
            for topic in (TOPIC, ROLLING):
                reply = produce(stub, topic, 999)
                assert reply.base_offset == len(acked[topic]), topic
                acked[topic].append(b"k999")
                assert read_all(stub, topic) == acked[topic]
        assert broker.stop() == 0, broker.log_text()[-3000:]

        # nothing half-written comes back after a restart
        for topic in (TOPIC, ROLLING):
            for name, size in files_of(data, topic).items():
                if name.endswith(".log") and size:
                    stored = (data / topic / "0" / name).read_bytes()
                    assert sum(h.size for h in validate_batches(stored, producer=False)) == size
        broker.start()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_pb2_grpc.BrokerServiceStub(channel)
            for topic in (TOPIC, ROLLING):
                assert read_all(stub, topic) == acked[topic]
                assert log_end(stub, topic) == len(acked[topic])
        assert "segment.truncated" not in broker.log_text()
    finally:
        broker.stop()
