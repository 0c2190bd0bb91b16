"""A real broker on a data directory with damaged or missing files beside the segments.

Index files deleted, a sealed segment cut short, a leader-epoch checkpoint
that is not even text: the broker starts, rebuilds what it can, serves
every intact batch and answers DATA_LOSS for the lost offsets instead of
skipping them. A damaged metadata.json or broker_id stops it with an error
naming the file, and nothing in the data directory is touched.
(tests/storage/test_damage_sweep.py damages every position at the storage
level; test_corruption.py covers damaged active segments.)
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import grpc
import pytest

from comet.cli.local_broker import LocalBroker
from comet.client import CometClient
from comet.records import decode_batches, encode_batch, iter_batches, validate_batches
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

pytestmark = pytest.mark.integration

TOPIC = "damaged"
BATCHES = 30
SEGMENT_BYTES = 1024


def value(i: int, j: int) -> bytes:
    return f"damaged/{i}/{j}".encode() * 3


def digest(data: Path) -> dict[str, str]:
    """sha256 of every file under the data directory but the lock."""
    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def fetch_status(address: str, offset: int) -> tuple[grpc.StatusCode, str, bytes]:
    with grpc.insecure_channel(address) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        try:
            reply = stub.Fetch(pb.FetchRequest(topic=TOPIC, partition=0, offset=offset), timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", b""
        return grpc.StatusCode.OK, "", reply.records


def failed_start(data: Path, log_path: Path) -> str:
    """Start a broker that must refuse to start; return what it said."""
    broker = LocalBroker(data, log_path=log_path)
    with pytest.raises(RuntimeError, match="exited with code 1"):
        broker.start(timeout_s=20)
    broker.kill()
    return broker.log_text()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped broker's data directory: BATCHES batches in several small segments."""
    root = tmp_path_factory.mktemp("damaged-files")
    data = root / "data"
    first = LocalBroker(data, log_path=root / "first.log").start()
    try:
        with CometClient(first.address) as client:
            client.create_topic(TOPIC, config={"segment.bytes": str(SEGMENT_BYTES)})
            for i in range(BATCHES):
                batch = encode_batch((None, value(i, j)) for j in range(2))
                client.produce_batch(TOPIC, 0, batch, acks=1)
    finally:
        assert first.stop() == 0, first.log_text()[-3000:]
    return data


def test_broker_starts_rebuilds_and_never_skips_lost_offsets(written, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(written, data)
    partition = data / TOPIC / "0"
    segments = sorted(partition.glob("*.log"))
    assert len(segments) >= 4, segments
    for index in [*partition.glob("*.index"), *partition.glob("*.timeindex")]:
        index.unlink()
    victim = segments[1]
    positions = [pos for pos, _ in iter_batches(victim.read_bytes())]
    cut = positions[2]  # the segment ends cleanly, two batches short of its successor
    lost_from = int(victim.stem) + 2 * 2
    lost_to = int(segments[2].stem)  # the next segment's base offset
    with open(victim, "r+b") as f:
        f.truncate(cut)
    (partition / "leader-epoch-checkpoint").write_bytes(b"\xff\xfe not a checkpoint \x00")

    second = LocalBroker(data, log_path=tmp_path / "second.log").start()
    try:
        with CometClient(second.address) as client:
            served, offset = [], 0
            while offset < lost_from:  # reads stop at segment ends
                page = client.fetch(TOPIC, 0, offset).records
                validate_batches(page, producer=False)
                served += list(decode_batches(page, offset))
                offset = served[-1].offset + 1
            assert offset == lost_from
            assert [r.value for r in served] == [
                value(i, j) for i in range(lost_from // 2) for j in range(2)
            ]
            tail = client.fetch(TOPIC, 0, lost_to)
            assert next(decode_batches(tail.records)).value == value(lost_to // 2, 0)
            end = client.list_offsets(TOPIC, 0)
            assert end == 2 * BATCHES
            after = client.produce_batch(TOPIC, 0, encode_batch([(None, b"fresh")]), acks=1)
            assert after.base_offset == end
        for offset in (lost_from, lost_to - 1):
            code, details, _ = fetch_status(second.address, offset)
            assert code == grpc.StatusCode.DATA_LOSS, (offset, code, details)
            assert victim.name in details, details
            assert f"offsets {lost_from} to {lost_to - 1} are missing" in details, details
    finally:
        assert second.stop() == 0, second.log_text()[-3000:]
    assert all(p.with_suffix(".index").exists() for p in segments), "indexes not rebuilt"
    checkpoint = (partition / "leader-epoch-checkpoint").read_text()
    assert checkpoint.split("\n")[:3] == ["0", "1", "0 0"], checkpoint
    log_text = second.log_text()
    assert "segment.index_rebuilt" in log_text and "leader_epoch.checkpoint_invalid" in log_text


def test_damaged_metadata_or_broker_id_stops_the_broker_and_touches_nothing(written, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(written, data)
    meta = data / "@meta"
    metadata, broker_id = meta / "metadata.json", meta / "broker_id"
    good_metadata, good_id = metadata.read_bytes(), broker_id.read_bytes()

    metadata.write_bytes(good_metadata[: len(good_metadata) // 2])
    before = digest(data)
    said = failed_start(data, tmp_path / "metadata.log")
    assert f"cannot read metadata file {metadata}" in said, said[-2000:]
    assert digest(data) == before, "a broker that refused to start changed the data directory"

    metadata.write_bytes(good_metadata)
    broker_id.write_bytes(b"\xff\xfe\x00 garbage\n")
    before = digest(data)
    said = failed_start(data, tmp_path / "broker-id.log")
    assert f"broker id file {broker_id} is damaged" in said, said[-2000:]
    assert "Traceback" not in said, said[-2000:]
    assert digest(data) == before

    broker_id.write_bytes(good_id)
    again = LocalBroker(data, log_path=tmp_path / "again.log").start()
    try:
        with CometClient(again.address) as client:
            fetched = client.fetch(TOPIC, 0, 0)
            assert next(decode_batches(fetched.records)).value == value(0, 0)
            assert client.metadata().brokers[0].id == good_id.decode().strip()
    finally:
        assert again.stop() == 0, again.log_text()[-3000:]
