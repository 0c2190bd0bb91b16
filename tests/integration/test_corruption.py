"""Damaged segment files: the broker recovers to the last intact batch and never serves bad bytes.

One broker writes known batches into several topics and is stopped
(SIGTERM); then each topic's segment files are damaged in a different way
and the broker is started again on the same data directory.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from comet.cli.local_broker import LocalBroker
from comet.client import CometClient
from comet.errors import CometError, OffsetOutOfRangeError
from comet.records import decode_batches, encode_batch, iter_batches, validate_batches
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

pytestmark = pytest.mark.integration

BATCHES = 5
RECORDS_PER_BATCH = 4
TRUNCATE_BYTES = 7
EVERY_BATCH_INDEXED = {"index.interval.bytes": "0"}


@dataclass(frozen=True)
class Damage:
    """What was done to a topic's active segment and what must survive it."""

    topic: str
    config: dict[str, str]
    intact_batches: int  # batches before the damaged one

    @property
    def end_offset(self) -> int:
        return self.intact_batches * RECORDS_PER_BATCH


CASES = {
    "truncated-tail": Damage("truncated-tail", EVERY_BATCH_INDEXED, BATCHES - 1),
    "flipped-byte-last-batch": Damage("flipped-byte-last-batch", EVERY_BATCH_INDEXED, BATCHES - 1),
    "flipped-byte-middle-batch": Damage("flipped-byte-middle-batch", {}, 2),
    "garbage-appended": Damage("garbage-appended", EVERY_BATCH_INDEXED, BATCHES),
    "undamaged": Damage("undamaged", {}, BATCHES),
}
SEALED = "sealed-segment-flip"


def value(topic: str, batch: int, i: int) -> bytes:
    return f"{topic}/{batch}/{i}".encode()


def segment_files(data: Path, topic: str) -> list[Path]:
    return sorted((data / topic / "0").glob("*.log"))


def batch_positions(buf: bytes) -> list[int]:
    return [pos for pos, _ in iter_batches(buf)]


def flip(path: Path, position: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x5A
    path.write_bytes(raw)


def log_events(broker: LocalBroker) -> list[dict]:
    events = []
    for line in broker.log_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@dataclass
class Recovered:
    broker: LocalBroker
    data: Path
    active_before: dict[str, bytes]  # each topic's active segment as written, before damage
    sealed_bad_offset: int
    sealed_good_offset: int


@pytest.fixture(scope="module")
def recovered(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("corruption")
    data = root / "data"
    first = LocalBroker(data_dir=data, log_path=root / "first.log").start()
    try:
        with CometClient(first.address) as client:
            for case in CASES.values():
                client.create_topic(case.topic, config=case.config)
                for b in range(BATCHES):
                    batch = encode_batch(
                        (None, value(case.topic, b, i)) for i in range(RECORDS_PER_BATCH)
                    )
                    client.produce_batch(case.topic, 0, batch, acks=1)
            client.create_topic(SEALED, config={"segment.bytes": "1024"})
            for b in range(12):
                batch = encode_batch((None, value(SEALED, b, i) * 8) for i in range(2))
                client.produce_batch(SEALED, 0, batch, acks=1)
    finally:
        assert first.stop() == 0, first.log_text()[-3000:]

    active_before = {}
    for name, case in CASES.items():
        (segment,) = segment_files(data, case.topic)
        raw = segment.read_bytes()
        positions = batch_positions(raw)
        assert len(positions) == BATCHES, f"{segment}: expected {BATCHES} batches on disk"
        validate_batches(raw, producer=False)
        active_before[case.topic] = raw
        last = positions[-1]
        if name == "truncated-tail":
            with open(segment, "r+b") as fh:
                fh.truncate(len(raw) - TRUNCATE_BYTES)
        elif name == "flipped-byte-last-batch":
            flip(segment, last + 70)
        elif name == "flipped-byte-middle-batch":
            flip(segment, positions[2] + 70)
        elif name == "garbage-appended":
            with open(segment, "ab") as fh:
                fh.write(random.Random(7).randbytes(300))

    # a sealed (not active) segment: damage is not rescanned at start, but never served
    sealed = segment_files(data, SEALED)
    assert len(sealed) >= 2, "segment.bytes=1024 should have rolled the log"
    first_segment = sealed[0].read_bytes()
    positions = batch_positions(first_segment)
    assert len(positions) >= 2
    flip(sealed[0], positions[1] + 70)
    bad_offset = list(iter_batches(first_segment))[1][1].base_offset
    good_offset = int(sealed[1].stem)

    second = LocalBroker(data_dir=data, log_path=root / "second.log").start()
    yield Recovered(second, data, active_before, bad_offset, good_offset)
    assert second.stop() == 0, second.log_text()[-3000:]


def read_all(client: CometClient, topic: str) -> bytes:
    out = bytearray()
    offset = 0
    for _ in range(100):
        res = client.fetch(topic, 0, offset)
        if not res.records:
            break
        headers = validate_batches(res.records, producer=False)
        out += res.records
        offset = headers[-1].next_offset
    return bytes(out)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_recovers_to_last_intact_batch_and_appends_after_it(recovered, case):
    original = recovered.active_before[case.topic]
    intact_end = (
        batch_positions(original)[case.intact_batches]
        if case.intact_batches < BATCHES
        else len(original)
    )
    with CometClient(recovered.broker.address) as client:
        assert client.list_offsets(case.topic, 0) == case.end_offset
        desc = client.describe_topic(case.topic).partitions[0]
        assert (desc.log_end_offset, desc.high_watermark) == (case.end_offset, case.end_offset)

        # every batch before the damage is served, byte for byte as stored before
        stored = read_all(client, case.topic)
        assert stored == original[:intact_end]
        assert [r.value for r in decode_batches(stored)] == [
            value(case.topic, b, i)
            for b in range(case.intact_batches)
            for i in range(RECORDS_PER_BATCH)
        ]
        assert client.fetch(case.topic, 0, case.end_offset).records == b""
        with pytest.raises(OffsetOutOfRangeError):
            client.fetch(case.topic, 0, case.end_offset + 1)

        # new produces continue right after the last intact batch
        fresh = encode_batch([(None, b"after recovery")])
        r = client.produce_batch(case.topic, 0, fresh, acks=1)
        assert (r.base_offset, r.last_offset) == (case.end_offset, case.end_offset)
        again = read_all(client, case.topic)
        records = list(decode_batches(again))
        assert [x.offset for x in records] == list(range(case.end_offset + 1))
        assert records[-1].value == b"after recovery"

    # the damaged bytes are gone from the file itself
    (segment,) = segment_files(recovered.data, case.topic)
    on_disk = segment.read_bytes()
    assert on_disk[:intact_end] == original[:intact_end]
    assert len(on_disk) == intact_end + len(fresh)


def test_truncation_is_logged_for_damaged_segments_only(recovered):
    truncated = {
        Path(e["file"]).parent.parent.name: e
        for e in log_events(recovered.broker)
        if e.get("event") == "segment.truncated"
    }
    damaged = {c.topic for c in CASES.values() if c.intact_batches < BATCHES}
    damaged.add(CASES["garbage-appended"].topic)
    assert set(truncated) == damaged
    for topic, event in truncated.items():
        original = recovered.active_before[topic]
        case = next(c for c in CASES.values() if c.topic == topic)
        positions = [*batch_positions(original), len(original)]
        assert event["valid_bytes"] == positions[case.intact_batches]
        assert event["dropped_bytes"] > 0
        assert event["level"] == "warning"


def test_damage_in_a_sealed_segment_is_never_served(recovered):
    bad = recovered.sealed_bad_offset
    with CometClient(recovered.broker.address) as client:
        # reading up to the damage returns only the intact batches before it
        head = client.fetch(SEALED, 0, 0)
        headers = validate_batches(head.records, producer=False)
        assert headers[-1].next_offset <= bad
        # a read that starts at the damaged batch fails, saying so, instead of returning it
        with pytest.raises(CometError) as info:
            client.fetch(SEALED, 0, bad)
        assert re.search(r"corrupt|CRC", str(info.value), re.IGNORECASE), str(info.value)
        # later segments are still readable
        tail = client.fetch(SEALED, 0, recovered.sealed_good_offset)
        validate_batches(tail.records, producer=False)
        assert next(r.offset for r in decode_batches(tail.records)) == recovered.sealed_good_offset
    # the wire status is DATA_LOSS, gRPC's code for unrecoverable corruption, not INTERNAL
    with grpc.insecure_channel(recovered.broker.address) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.Fetch(pb.FetchRequest(topic=SEALED, partition=0, offset=bad), timeout=10)
        assert raw.value.code() == grpc.StatusCode.DATA_LOSS, raw.value.details()
