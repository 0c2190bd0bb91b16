"""Programs written against the ORIGINAL comet v1 API keep working.

`original/comet_v1_original.proto` holds the original schema and nothing
else. It is compiled with grpc_tools.protoc at test time; the tests talk to a
real broker through message classes built from that schema alone (a separate
descriptor pool, so they cannot borrow anything from comet.v1.broker_pb2),
and one test runs a client made of protoc-generated original stubs in a
separate process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from comet.v1 import broker_pb2

ORIGINAL_DIR = Path(__file__).parent / "original"
ORIGINAL_PROTO = "comet_v1_original.proto"
SERVICE = "comet.v1.BrokerService"
ORIGINAL_RPCS = (
    "CreateTopic",
    "DeleteTopic",
    "ListTopics",
    "GetMetadata",
    "Produce",
    "Subscribe",
    "Poll",
    "Unsubscribe",
    "Consume",
    "Replicate",
)
NS_PER_MS = 1_000_000


# --- compiling the original schema ------------------------------------------


@pytest.fixture(scope="session")
def original_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """protoc output for the original schema: descriptor set, _pb2 and _pb2_grpc modules."""
    out = tmp_path_factory.mktemp("orig")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ORIGINAL_DIR}",
            f"--descriptor_set_out={out / 'original.pb'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(ORIGINAL_DIR / ORIGINAL_PROTO),
        ]
    )
    assert code == 0, "protoc failed on the original schema"
    return out


@pytest.fixture(scope="session")
def original_file(original_build: Path) -> descriptor_pb2.FileDescriptorProto:
    fds = descriptor_pb2.FileDescriptorSet.FromString((original_build / "original.pb").read_bytes())
    (file,) = fds.file
    return file


class OriginalClient:
    """Calls BrokerService with message classes of the original schema only."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto, address: str) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.pool.Add(file)
        self.channel = grpc.insecure_channel(address)
        service = self.pool.FindServiceByName(SERVICE)
        self._calls = {}
        for method in service.methods:
            req = message_factory.GetMessageClass(method.input_type)
            resp = message_factory.GetMessageClass(method.output_type)
            self._calls[method.name] = (
                req,
                self.channel.unary_unary(
                    f"/{SERVICE}/{method.name}",
                    request_serializer=req.SerializeToString,
                    response_deserializer=resp.FromString,
                ),
            )

    def __call__(self, rpc: str, **fields):
        req_cls, call = self._calls[rpc]
        return call(req_cls(**fields), timeout=10)

    def fails(self, code: grpc.StatusCode, rpc: str, **fields) -> str:
        """Call `rpc`, assert it fails with `code`, return the status details."""
        with pytest.raises(grpc.RpcError) as info:
            self(rpc, **fields)
        assert info.value.code() == code, info.value.details()
        return info.value.details() or ""

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def orig(original_file, broker):
    client = OriginalClient(original_file, broker.address)
    yield client
    client.close()


def create(orig: OriginalClient, name: str, partitions: int = 1) -> None:
    reply = orig("CreateTopic", name=name, partitions=partitions, replication_factor=1)
    assert reply.success is True


def produce(orig: OriginalClient, topic: str, records: list[tuple[int, bytes, bytes]]):
    reply = orig(
        "Produce",
        topic=topic,
        records=[{"partition": p, "key": k, "value": v} for p, k, v in records],
    )
    return [(r.partition, r.offset) for r in reply.results]


# --- the schema itself -----------------------------------------------------


def schema_differences(original: descriptor_pb2.FileDescriptorProto, current: object) -> list[str]:
    """Every way `current` (a FileDescriptor) breaks a field or RPC of `original`."""
    problems = []
    if current.package != original.package:
        problems.append(f"package {current.package!r} != {original.package!r}")
    for msg in original.message_type:
        cur = current.message_types_by_name.get(msg.name)
        if cur is None:
            problems.append(f"message {msg.name} is missing")
            continue
        for field in msg.field:
            where = f"{msg.name}.{field.name}={field.number}"
            cf = cur.fields_by_number.get(field.number)
            if cf is None:
                problems.append(f"{where}: no field with that number")
                continue
            if cf.name != field.name:
                problems.append(f"{where}: now named {cf.name}")
            if cf.type != field.type:
                problems.append(f"{where}: type {cf.type} != {field.type}")
            repeated = field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
            if cf.is_repeated != repeated:
                problems.append(f"{where}: repeated {cf.is_repeated} != {repeated}")
            if field.type_name:
                want = field.type_name.lstrip(".")
                got = (cf.message_type or cf.enum_type).full_name
                if got != want:
                    problems.append(f"{where}: type {got} != {want}")
    for service in original.service:
        cur_service = current.services_by_name.get(service.name)
        if cur_service is None:
            problems.append(f"service {service.name} is missing")
            continue
        for method in service.method:
            cm = cur_service.methods_by_name.get(method.name)
            if cm is None:
                problems.append(f"rpc {method.name} is missing")
                continue
            if cm.input_type.full_name != method.input_type.lstrip("."):
                problems.append(f"rpc {method.name}: input {cm.input_type.full_name}")
            if cm.output_type.full_name != method.output_type.lstrip("."):
                problems.append(f"rpc {method.name}: output {cm.output_type.full_name}")
            if cm.client_streaming or cm.server_streaming:
                problems.append(f"rpc {method.name}: became streaming")
    return problems


def test_original_schema_is_complete(original_file):
    """The checked-in original schema has the 10 RPCs and the reference's messages."""
    (service,) = original_file.service
    assert original_file.package == "comet.v1"
    assert service.name == "BrokerService"
    assert tuple(m.name for m in service.method) == ORIGINAL_RPCS
    fields = {m.name: len(m.field) for m in original_file.message_type}
    assert len(fields) == 28
    assert fields["Message"] == 6
    assert fields["ListTopicsRequest"] == 0


def test_current_proto_keeps_every_original_field(original_file):
    assert schema_differences(original_file, broker_pb2.DESCRIPTOR) == []


def test_schema_check_catches_a_changed_field(original_file):
    """The comparison above can fail: a current schema with one field moved is caught."""
    changed = descriptor_pb2.FileDescriptorProto()
    broker_pb2.DESCRIPTOR.CopyToProto(changed)
    changed.name = "changed.proto"
    for msg in changed.message_type:
        if msg.name == "Message":
            for field in msg.field:
                if field.name == "timestamp":
                    field.number = 40
                if field.name == "partition":
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
    pool = descriptor_pool.DescriptorPool()
    current = pool.Add(changed)
    problems = schema_differences(original_file, current)
    assert any("Message.timestamp=4" in p for p in problems), problems
    assert any("Message.partition=5" in p for p in problems), problems


# --- CreateTopic / ListTopics / GetMetadata ------------------------------------


def test_create_topic_then_listed(orig, topic):
    create(orig, topic, partitions=3)
    listed = {t.name: (t.partitions, t.replication_factor) for t in orig("ListTopics").topics}
    assert listed[topic] == (3, 1)
    names = [t.name for t in orig("ListTopics").topics]
    assert names == sorted(names)


def test_create_topic_twice_already_exists(orig, topic):
    create(orig, topic)
    details = orig.fails(grpc.StatusCode.ALREADY_EXISTS, "CreateTopic", name=topic, partitions=1)
    assert topic in details


@pytest.mark.parametrize("name", ["a/b", "..", ".", "", "sp ace", "x" * 250, "../escape"])
def test_create_topic_bad_name_invalid_argument(orig, name):
    details = orig.fails(
        grpc.StatusCode.INVALID_ARGUMENT,
        "CreateTopic",
        name=name,
        partitions=1,
        replication_factor=1,
    )
    assert "name" in details
    assert name not in {t.name for t in orig("ListTopics").topics}


def test_create_topic_negative_partitions_invalid_argument(orig, topic):
    details = orig.fails(grpc.StatusCode.INVALID_ARGUMENT, "CreateTopic", name=topic, partitions=-1)
    assert "partitions" in details
    assert topic not in {t.name for t in orig("ListTopics").topics}


def test_create_topic_replication_above_brokers_invalid_argument(orig, topic):
    details = orig.fails(
        grpc.StatusCode.INVALID_ARGUMENT,
        "CreateTopic",
        name=topic,
        partitions=1,
        replication_factor=2,
    )
    assert "replication_factor" in details
    assert topic not in {t.name for t in orig("ListTopics").topics}


def test_get_metadata_brokers_and_leaders(orig, broker, topic):
    create(orig, topic, partitions=3)
    meta = orig("GetMetadata", topics=[topic])
    assert len(meta.brokers) == 1
    (me,) = meta.brokers
    assert me.id
    assert me.address == broker.address
    assert [t.name for t in meta.topics] == [topic]
    (tm,) = meta.topics
    assert tm.replication_factor == 1
    assert [p.id for p in tm.partitions] == [0, 1, 2]
    for p in tm.partitions:
        assert p.leader_broker_id == me.id
        assert list(p.replica_broker_ids) == [me.id]
    everything = orig("GetMetadata")
    assert topic in {t.name for t in everything.topics}


def test_get_metadata_unknown_topic_not_found(orig, topic):
    details = orig.fails(grpc.StatusCode.NOT_FOUND, "GetMetadata", topics=[topic])
    assert topic in details


# --- Produce ---------------------------------------------------------------


def test_produce_explicit_partition_offsets_consecutive(orig, topic):
    create(orig, topic, partitions=3)
    first = produce(orig, topic, [(1, b"", b"a"), (1, b"", b"b"), (1, b"", b"c")])
    assert first == [(1, 0), (1, 1), (1, 2)]
    second = produce(orig, topic, [(1, b"k", b"d"), (2, b"", b"e"), (1, b"", b"f")])
    assert second == [(1, 3), (2, 0), (1, 4)]
    values = [m.value for m in orig("Consume", topic=topic, partition=1, offset=0).messages]
    assert values == [b"a", b"b", b"c", b"d", b"f"]


def test_produce_negative_partition_uses_crc32_of_key(orig, topic):
    create(orig, topic, partitions=4)
    keys = [f"key-{i}".encode() for i in range(40)]
    results = produce(orig, topic, [(-1, k, b"v-" + k) for k in keys])
    expected = [zlib.crc32(k) % 4 for k in keys]
    assert [p for p, _ in results] == expected
    assert set(expected) == {0, 1, 2, 3}
    for part in range(4):
        mine = [k for k, p in zip(keys, expected, strict=True) if p == part]
        offsets = [o for (p, o) in results if p == part]
        assert offsets == list(range(len(mine)))
        got = orig("Consume", topic=topic, partition=part, offset=0, max_records=100).messages
        assert [(m.key, m.value) for m in got] == [(k, b"v-" + k) for k in mine]
    # the same key always lands on the same partition
    again = produce(orig, topic, [(-1, keys[0], b"again")])
    assert again[0][0] == expected[0]


def test_produce_keyless_round_robin_spreads(orig, topic):
    create(orig, topic, partitions=3)
    results = produce(orig, topic, [(-1, b"", f"v{i}".encode()) for i in range(6)])
    counts = Counter(p for p, _ in results)
    assert counts == {0: 2, 1: 2, 2: 2}
    more = produce(orig, topic, [(-1, b"", b"x") for _ in range(3)])
    assert sorted(p for p, _ in more) == [0, 1, 2]


def test_produce_unknown_topic_not_found(orig, topic):
    details = orig.fails(
        grpc.StatusCode.NOT_FOUND,
        "Produce",
        topic=topic,
        records=[{"partition": 0, "value": b"x"}],
    )
    assert topic in details


def test_produce_without_records_invalid_argument(orig, topic):
    create(orig, topic)
    details = orig.fails(grpc.StatusCode.INVALID_ARGUMENT, "Produce", topic=topic, records=[])
    assert "records" in details


def test_produce_partition_out_of_range_writes_nothing(orig, topic):
    create(orig, topic, partitions=3)
    orig.fails(
        grpc.StatusCode.NOT_FOUND,
        "Produce",
        topic=topic,
        records=[{"partition": 3, "value": b"x"}],
    )
    # a request with one bad record writes none of its records
    orig.fails(
        grpc.StatusCode.NOT_FOUND,
        "Produce",
        topic=topic,
        records=[{"partition": 0, "value": b"ok"}, {"partition": 7, "value": b"bad"}],
    )
    assert list(orig("Consume", topic=topic, partition=0, offset=0).messages) == []
    assert produce(orig, topic, [(0, b"", b"first")]) == [(0, 0)]


# --- Consume ---------------------------------------------------------------


def test_consume_returns_records_with_original_fields(orig, topic):
    create(orig, topic, partitions=2)
    before = time.time_ns()
    produce(orig, topic, [(1, b"k1", b"v1"), (1, b"", b"v2"), (1, b"k3", b"")])
    after = time.time_ns()
    got = orig("Consume", topic=topic, partition=1, offset=0, max_records=10).messages
    assert [(m.offset, m.key, m.value) for m in got] == [
        (0, b"k1", b"v1"),
        (1, b"", b"v2"),
        (2, b"k3", b""),
    ]
    for m in got:
        assert m.partition == 1
        assert m.topic == topic
        assert m.timestamp % NS_PER_MS == 0, m.timestamp
        assert before // NS_PER_MS * NS_PER_MS <= m.timestamp <= after, (before, m.timestamp)
    tail = orig("Consume", topic=topic, partition=1, offset=1, max_records=10).messages
    assert [m.offset for m in tail] == [1, 2]


def test_consume_max_records(orig, topic):
    create(orig, topic)
    produce(orig, topic, [(0, b"", str(i).encode()) for i in range(5)])
    got = orig("Consume", topic=topic, partition=0, offset=1, max_records=2).messages
    assert [(m.offset, m.value) for m in got] == [(1, b"1"), (2, b"2")]


def test_consume_negative_max_records_invalid_argument(orig, topic):
    create(orig, topic)
    details = orig.fails(
        grpc.StatusCode.INVALID_ARGUMENT,
        "Consume",
        topic=topic,
        partition=0,
        offset=0,
        max_records=-1,
    )
    assert "max_records" in details


def test_consume_at_log_end_is_empty(orig, topic):
    create(orig, topic)
    assert list(orig("Consume", topic=topic, partition=0, offset=0).messages) == []
    produce(orig, topic, [(0, b"", b"a"), (0, b"", b"b"), (0, b"", b"c")])
    assert list(orig("Consume", topic=topic, partition=0, offset=3).messages) == []


def test_consume_beyond_log_end_out_of_range(orig, topic):
    create(orig, topic)
    produce(orig, topic, [(0, b"", b"a"), (0, b"", b"b"), (0, b"", b"c")])
    details = orig.fails(
        grpc.StatusCode.OUT_OF_RANGE, "Consume", topic=topic, partition=0, offset=10
    )
    # the message gives the valid range: from 0 to the log end 3
    assert "10" in details
    assert re.search(r"\b0\b.*\b3\b", details), details


def test_consume_negative_offset_out_of_range(orig, topic):
    create(orig, topic)
    produce(orig, topic, [(0, b"", b"a")])
    orig.fails(grpc.StatusCode.OUT_OF_RANGE, "Consume", topic=topic, partition=0, offset=-1)


def test_consume_unknown_topic_or_partition_not_found(orig, topic):
    orig.fails(grpc.StatusCode.NOT_FOUND, "Consume", topic=topic, partition=0, offset=0)
    create(orig, topic, partitions=2)
    orig.fails(grpc.StatusCode.NOT_FOUND, "Consume", topic=topic, partition=2, offset=0)


# --- DeleteTopic -----------------------------------------------------------


def test_delete_topic_then_not_found(orig, topic):
    create(orig, topic, partitions=2)
    produce(orig, topic, [(0, b"", b"a")])
    assert orig("DeleteTopic", name=topic).success is True
    assert topic not in {t.name for t in orig("ListTopics").topics}
    orig.fails(grpc.StatusCode.NOT_FOUND, "DeleteTopic", name=topic)
    orig.fails(grpc.StatusCode.NOT_FOUND, "Consume", topic=topic, partition=0, offset=0)
    orig.fails(grpc.StatusCode.NOT_FOUND, "GetMetadata", topics=[topic])
    # the name is free again and the new topic starts empty
    create(orig, topic)
    assert list(orig("Consume", topic=topic, partition=0, offset=0).messages) == []


# --- consumer groups of the original API ----------------------------------------


def poll_until(orig: OriginalClient, topic: str, group: str, member: str, want: int) -> list:
    """Poll until `want` messages arrived (a poll may first answer rebalance=true)."""
    got = []
    deadline = time.monotonic() + 10
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} messages polled"
        reply = orig("Poll", topic=topic, group=group, member_id=member, max_records=100)
        got += list(reply.messages)
    return got


def test_subscribe_poll_unsubscribe(orig, topic):
    create(orig, topic, partitions=2)
    produce(orig, topic, [(0, b"a", b"0a"), (0, b"", b"0b"), (1, b"", b"1a")])
    group = f"{topic}-group"
    sub = orig("Subscribe", topic=topic, group=group)
    assert sub.member_id
    assert list(sub.partitions) == [0, 1]
    assert sub.generation >= 1
    got = poll_until(orig, topic, group, sub.member_id, 3)
    assert sorted((m.partition, m.offset, m.key, m.value) for m in got) == [
        (0, 0, b"a", b"0a"),
        (0, 1, b"", b"0b"),
        (1, 0, b"", b"1a"),
    ]
    assert all(m.topic == topic and m.timestamp % NS_PER_MS == 0 for m in got)
    # Poll moved the group's position: nothing is delivered twice
    again = orig("Poll", topic=topic, group=group, member_id=sub.member_id, max_records=100)
    assert list(again.messages) == []
    assert orig("Unsubscribe", topic=topic, group=group, member_id=sub.member_id).success
    details = orig.fails(
        grpc.StatusCode.NOT_FOUND, "Poll", topic=topic, group=group, member_id=sub.member_id
    )
    assert "member" in details
    # a new member continues from the group's position
    produce(orig, topic, [(1, b"", b"1b")])
    sub2 = orig("Subscribe", topic=topic, group=group)
    assert sub2.member_id != sub.member_id
    later = poll_until(orig, topic, group, sub2.member_id, 1)
    assert [(m.partition, m.offset, m.value) for m in later] == [(1, 1, b"1b")]


def test_subscribe_unknown_topic_not_found(orig, topic):
    details = orig.fails(
        grpc.StatusCode.NOT_FOUND, "Subscribe", topic=topic, group=f"{topic}-group"
    )
    assert topic in details


def test_replicate_is_refused_at_the_leader_and_for_unknown_topics(orig, topic):
    # Replication is the followers' ReplicaFetch now; Replicate still writes to a
    # follower replica for old callers, and a single broker leads every partition.
    orig("CreateTopic", name=topic, partitions=1, replication_factor=1)
    details = orig.fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        "Replicate",
        topic=topic,
        partition=0,
        records=[{"offset": 0, "value": b"x"}],
    )
    assert "led by this broker" in details
    details = orig.fails(
        grpc.StatusCode.NOT_FOUND,
        "Replicate",
        topic=f"{topic}-missing",
        partition=0,
        records=[{"offset": 0, "value": b"x"}],
    )
    assert "does not exist" in details


# --- protoc-generated original stubs, in their own process ---------------------


def test_generated_original_stubs_work(original_build, broker, topic):
    script = ORIGINAL_DIR / "original_stub_client.py"
    done = subprocess.run(
        [sys.executable, str(script), str(original_build), broker.address, topic],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=original_build,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["imported_comet_package"] is False
    assert out["create_success"] is True
    assert [topic, 2, 1] in out["listed"]
    ((broker_id, address),) = out["brokers"]
    assert address == broker.address
    assert out["partitions"] == [[0, broker_id, [broker_id]], [1, broker_id, [broker_id]]]
    assert out["produced"] == [[1, 0], [1, 1]]
    assert [row[:5] for row in out["consumed"]] == [
        [0, "k1", "v1", 1, topic],
        [1, "", "v2", 1, topic],
    ]
    assert all(row[5] > 0 and row[5] % NS_PER_MS == 0 for row in out["consumed"])
    assert out["subscribed"][:2] == [True, [0, 1]]
    assert out["subscribed"][2] >= 1
    assert out["polled"] == [[1, 0, "v1"], [1, 1, "v2"]]
    assert out["unsubscribed"] is True
    assert out["replicate_code"] == "INVALID_ARGUMENT"  # no records
    assert out["delete_success"] is True
    assert out["delete_again_code"] == "NOT_FOUND"
