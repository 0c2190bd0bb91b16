"""The batch data path and admin calls through comet.aio / comet.client against a real broker."""

from __future__ import annotations

import asyncio
import os
import struct
import time

import grpc
import pytest

from comet import client as sync_client
from comet.aio import EARLIEST, LATEST, CometClient
from comet.cli.local_broker import free_port
from comet.errors import (
    BrokerUnavailableError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    TopicNotFoundError,
)
from comet.records import (
    RecordBatchBuilder,
    decode_batches,
    encode_batch,
    iter_batches,
    parse_header,
    validate_batches,
)
from comet.v1 import broker_pb2 as pb

MAX_REQUEST_BYTES = 256 * 1024
BROKER_ARGS = [
    "--max-request-bytes",
    str(MAX_REQUEST_BYTES),
    "--retention-check-interval-ms",
    "100",
]


@pytest.fixture
async def client(broker):
    async with CometClient(broker.address, timeout=10) as c:
        yield c


def batch_of(*values: bytes, timestamp_ms: int | None = None) -> bytes:
    return encode_batch([(None, v) for v in values], timestamp_ms=timestamp_ms)


def values_of(records: bytes, start: int = 0) -> list[bytes | None]:
    return [r.value for r in decode_batches(records, start)]


async def log_end(client: CometClient, topic: str, partition: int = 0) -> int:
    """The log end offset as reported by both ListOffsets and DescribeTopic (they must agree)."""
    latest = await client.list_offsets(topic, partition, LATEST)
    described = (await client.describe_topic(topic)).partitions[partition]
    assert described.log_end_offset == latest
    return latest


async def read_all(client: CometClient, topic: str, partition: int = 0) -> bytes:
    """Every stored batch of a partition, fetched page by page (bounded)."""
    out = bytearray()
    offset = 0
    for _ in range(1000):
        res = await client.fetch(topic, partition, offset)
        if not res.records:
            return bytes(out)
        headers = validate_batches(res.records, producer=False)
        out += res.records
        offset = headers[-1].next_offset
        if offset >= res.high_watermark:
            return bytes(out)
    raise AssertionError("partition did not end within 1000 fetches")


# --- produce and fetch --------------------------------------------------------


async def test_batches_come_back_byte_identical_with_stamped_offsets(client, topic):
    await client.create_topic(topic)
    t0 = int(time.time() * 1000) - 5000
    builder = RecordBatchBuilder()
    for i in range(3):
        assert builder.append(
            f"k{i}".encode(), f"v{i}".encode(), timestamp_ms=t0 + i, headers=[("h", b"%d" % i)]
        )
    first = builder.build()
    second = encode_batch([(None, b"n0"), (b"key", None)], timestamp_ms=t0 + 10)

    r1 = await client.produce_batch(topic, 0, first, acks=1)
    r2 = await client.produce_batch(topic, 0, second, acks=1)
    r3 = await client.produce_batch(topic, 0, first + second, acks=1)
    assert (r1.base_offset, r1.last_offset) == (0, 2)
    assert (r2.base_offset, r2.last_offset) == (3, 4)
    assert (r3.base_offset, r3.last_offset) == (5, 9)
    assert r3.log_start_offset == 0

    epoch = (await client.metadata([topic])).topics[topic][0].leader_epoch
    stored = await read_all(client, topic)
    expected = [(first, 0), (second, 3), (first, 5), (second, 8)]
    assert len(stored) == sum(len(sent) for sent, _ in expected)
    positions = [pos for pos, _ in iter_batches(stored)]
    assert len(positions) == len(expected)
    for pos, (sent, base) in zip(positions, expected, strict=True):
        got = stored[pos : pos + len(sent)]
        assert got[:8] == struct.pack(">q", base)
        assert got[8:12] == sent[8:12]
        assert got[12:16] == struct.pack(">i", epoch)
        assert got[16:] == sent[16:]
    validate_batches(stored, producer=False)

    records = list(decode_batches(stored))
    assert [r.offset for r in records] == list(range(10))
    assert [(r.key, r.value) for r in records[:5]] == [
        (b"k0", b"v0"),
        (b"k1", b"v1"),
        (b"k2", b"v2"),
        (None, b"n0"),
        (b"key", None),
    ]
    assert [r.timestamp_ms for r in records[:5]] == [t0, t0 + 1, t0 + 2, t0 + 10, t0 + 10]
    assert records[1].headers == [("h", b"1")]


async def test_acks_levels(client, topic):
    await client.create_topic(topic)
    r0 = await client.produce_batch(topic, 0, batch_of(b"acks0"), acks=0)
    assert (r0.base_offset, r0.last_offset) == (-1, -1)
    deadline = time.monotonic() + 5
    while await client.list_offsets(topic, 0, LATEST) < 1:
        assert time.monotonic() < deadline, "acks=0 batch never appeared"
        await asyncio.sleep(0.01)
    r1 = await client.produce_batch(topic, 0, batch_of(b"acks1"), acks=1)
    r_all = await client.produce_batch(topic, 0, batch_of(b"all1", b"all2"), acks="all")
    r_minus = await client.produce_batch(topic, 0, batch_of(b"minus1"), acks=-1)
    assert (r1.base_offset, r1.last_offset) == (1, 1)
    assert (r_all.base_offset, r_all.last_offset) == (2, 3)
    assert (r_minus.base_offset, r_minus.last_offset) == (4, 4)
    assert values_of(await read_all(client, topic)) == [
        b"acks0",
        b"acks1",
        b"all1",
        b"all2",
        b"minus1",
    ]
    with pytest.raises(ValueError, match="acks"):
        await client.produce_batch(topic, 0, batch_of(b"x"), acks=2)  # type: ignore[arg-type]


async def test_invalid_acks_on_the_wire_rejected(client, broker, topic):
    await client.create_topic(topic)
    stub = client.stub(broker.address)
    request = pb.ProduceBatchRequest(topic=topic, partition=0, records=batch_of(b"x"), acks=2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ProduceBatch(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "acks" in (info.value.details() or "")
    assert await log_end(client, topic) == 0


async def test_long_poll_fetch_returns_when_data_arrives(client, broker, topic):
    await client.create_topic(topic)
    loop = asyncio.get_running_loop()
    started = loop.time()
    fetch = asyncio.create_task(client.fetch(topic, 0, 0, max_wait_ms=2000))
    done, _ = await asyncio.wait({fetch}, timeout=0.3)
    assert not done, "fetch at the log end answered without waiting for data"
    async with CometClient(broker.address) as producer:
        await producer.produce_batch(topic, 0, batch_of(b"wake up"), acks=1)
    result = await asyncio.wait_for(fetch, 5)
    elapsed = loop.time() - started
    assert elapsed < 1.5, f"long poll took {elapsed:.2f}s, max wait was 2s"
    assert values_of(result.records) == [b"wake up"]
    assert result.high_watermark == 1


async def test_long_poll_without_data_waits_then_returns_empty(client, topic):
    await client.create_topic(topic)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await client.fetch(topic, 0, 0, max_wait_ms=600)
    elapsed = loop.time() - started
    assert 0.55 <= elapsed < 2.5, elapsed
    assert result.records == b""
    assert (result.high_watermark, result.log_end_offset, result.log_start_offset) == (0, 0, 0)


async def test_long_poll_on_a_deleted_topic_answers_not_found(client, broker, topic):
    await client.create_topic(topic)
    loop = asyncio.get_running_loop()
    started = loop.time()
    fetch = asyncio.create_task(client.fetch(topic, 0, 0, max_wait_ms=5000))
    done, _ = await asyncio.wait({fetch}, timeout=0.3)
    assert not done
    async with CometClient(broker.address) as admin:
        await admin.delete_topic(topic)
    with pytest.raises(TopicNotFoundError):
        await asyncio.wait_for(fetch, 5)
    assert loop.time() - started < 2.5, "the long poll was not released by the delete"


async def test_fetch_min_bytes_waits_for_enough_data(client, broker, topic):
    await client.create_topic(topic)
    first = batch_of(b"a" * 100)
    await client.produce_batch(topic, 0, first, acks=1)
    loop = asyncio.get_running_loop()
    # not enough bytes within max_wait: what there is, after the wait
    started = loop.time()
    short = await client.fetch(topic, 0, 0, min_bytes=len(first) * 3, max_wait_ms=500)
    assert loop.time() - started >= 0.45
    assert values_of(short.records) == [b"a" * 100]
    # enough bytes arrive: the answer comes before max_wait
    started = loop.time()
    fetch = asyncio.create_task(
        client.fetch(topic, 0, 0, min_bytes=len(first) * 2, max_wait_ms=5000)
    )
    done, _ = await asyncio.wait({fetch}, timeout=0.3)
    assert not done, "answered below min_bytes before max_wait"
    async with CometClient(broker.address) as producer:
        await producer.produce_batch(topic, 0, batch_of(b"b" * 100), acks=1)
    result = await asyncio.wait_for(fetch, 5)
    assert loop.time() - started < 2.5
    assert values_of(result.records) == [b"a" * 100, b"b" * 100]


async def test_fetch_with_data_does_not_wait(client, topic):
    await client.create_topic(topic)
    await client.produce_batch(topic, 0, batch_of(b"a", b"b", b"c"), acks=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await client.fetch(topic, 0, 1, max_wait_ms=5000)
    assert loop.time() - started < 1.0
    # whole batches: the first one starts before the offset asked for
    assert parse_header(result.records).base_offset == 0
    assert values_of(result.records, 1) == [b"b", b"c"]


async def test_fetch_max_bytes_returns_whole_batches(client, topic):
    await client.create_topic(topic)
    batches = [batch_of(bytes([65 + i]) * 200) for i in range(3)]
    for b in batches:
        await client.produce_batch(topic, 0, b, acks=1)
    tiny = await client.fetch(topic, 0, 0, max_bytes=10)
    assert len(validate_batches(tiny.records, producer=False)) == 1
    assert tiny.records[16:] == batches[0][16:]
    limit = len(batches[0]) + len(batches[1]) + 10
    some = await client.fetch(topic, 0, 0, max_bytes=limit)
    headers = validate_batches(some.records, producer=False)
    assert 1 <= len(headers) <= 2
    assert len(some.records) <= limit
    assert [h.base_offset for h in headers] == list(range(len(headers)))


async def test_fetch_errors(client, broker, topic):
    await client.create_topic(topic, 2)
    await client.produce_batch(topic, 0, batch_of(b"a", b"b"), acks=1)
    with pytest.raises(OffsetOutOfRangeError):
        await client.fetch(topic, 0, 3)
    with pytest.raises(TopicNotFoundError):
        await client.fetch(topic, 2, 0)
    with pytest.raises(TopicNotFoundError):
        await client.fetch(topic + "-missing", 0, 0)
    at_end = await client.fetch(topic, 0, 2)
    assert at_end.records == b""
    stub = client.stub(broker.address)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, max_wait_ms=-1), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_wait_ms" in (info.value.details() or "")


async def test_produce_to_missing_topic_or_partition(client, topic):
    with pytest.raises(TopicNotFoundError):
        await client.produce_batch(topic, 0, batch_of(b"x"), acks=1)
    await client.create_topic(topic, 2)
    with pytest.raises(TopicNotFoundError):
        await client.produce_batch(topic, 2, batch_of(b"x"), acks=1)


# --- offsets and description ------------------------------------------------------


async def test_list_offsets_earliest_latest_and_by_timestamp(client, topic):
    await client.create_topic(topic)
    assert await client.list_offsets(topic, 0, EARLIEST) == 0
    assert await client.list_offsets(topic, 0, LATEST) == 0
    t0 = int(time.time() * 1000) - 60_000
    assert await client.list_offsets(topic, 0, t0) == -1
    await client.produce_batch(topic, 0, batch_of(b"a0", b"a1", timestamp_ms=t0), acks=1)
    await client.produce_batch(topic, 0, batch_of(b"b0", b"b1", timestamp_ms=t0 + 1000), acks=1)
    await client.produce_batch(topic, 0, batch_of(b"c0", b"c1", timestamp_ms=t0 + 2000), acks=1)
    assert await client.list_offsets(topic, 0, EARLIEST) == 0
    assert await client.list_offsets(topic, 0, LATEST) == 6
    expected = {
        0: 0,
        t0 - 1: 0,
        t0: 0,
        t0 + 1: 2,
        t0 + 1000: 2,
        t0 + 1500: 4,
        t0 + 2000: 4,
        t0 + 2001: -1,
    }
    got = {ts: await client.list_offsets(topic, 0, ts) for ts in expected}
    assert got == expected
    with pytest.raises(InvalidRequestError, match="timestamp_ms"):
        await client.list_offsets(topic, 0, -3)


async def test_describe_topic_config_and_offsets(client, broker, topic):
    overrides = {"retention.ms": "3600000", "segment.bytes": "1048576"}
    await client.create_topic(topic, 2, config=overrides)
    sent = batch_of(b"1", b"2", b"3") + batch_of(b"4", b"5")
    await client.produce_batch(topic, 1, sent, acks=1)
    d = await client.describe_topic(topic)
    me = (await client.metadata()).brokers[0].id
    assert d.name == topic
    assert d.replication_factor == 1
    assert d.config["retention.ms"] == "3600000"
    assert d.config["segment.bytes"] == "1048576"
    # broker defaults fill in the rest
    assert d.config["flush.policy"] == "batch"
    assert d.config["max.message.bytes"] == str(4 * 1024 * 1024)
    assert [p.id for p in d.partitions] == [0, 1]
    p0, p1 = d.partitions
    for p in d.partitions:
        assert p.leader == me
        assert p.replicas == (me,)
        assert p.isr == (me,)
        assert p.segment_count == 1
        assert p.log_start_offset == 0
    assert (p0.log_end_offset, p0.high_watermark, p0.size_bytes) == (0, 0, 0)
    assert (p1.log_end_offset, p1.high_watermark) == (5, 5)
    assert p1.size_bytes == len(sent)
    with pytest.raises(TopicNotFoundError):
        await client.describe_topic(topic + "-missing")


async def wait_for_log_start(client: CometClient, topic: str, above: int) -> int:
    """Poll until retention moved the log start above `above` (bounded)."""
    deadline = time.monotonic() + 10
    while (start := await client.list_offsets(topic, 0, EARLIEST)) <= above:
        assert time.monotonic() < deadline, "retention never deleted a segment"
        await asyncio.sleep(0.05)
    return start


@pytest.mark.parametrize(
    ("config", "age_ms"),
    [({"retention.bytes": "1500"}, 0), ({"retention.ms": "60000"}, 3_600_000)],
    ids=["by-bytes", "by-time"],
)
async def test_retention_moves_the_log_start(client, topic, config, age_ms):
    await client.create_topic(topic, config={"segment.bytes": "1024", **config})
    ts = int(time.time() * 1000) - age_ms
    for i in range(10):
        await client.produce_batch(
            topic, 0, batch_of(*[b"%d-%d" % (i, j) * 20 for j in range(4)], timestamp_ms=ts)
        )
    start = await wait_for_log_start(client, topic, 0)
    assert start % 4 == 0  # whole segments of whole batches go
    assert await client.list_offsets(topic, 0, LATEST) == 40
    d = (await client.describe_topic(topic)).partitions[0]
    assert (d.log_start_offset, d.log_end_offset) == (start, 40)
    assert d.segment_count >= 1
    with pytest.raises(OffsetOutOfRangeError):
        await client.fetch(topic, 0, 0)
    res = await client.fetch(topic, 0, start)
    assert res.log_start_offset == start
    assert parse_header(res.records).base_offset == start
    assert values_of(res.records)[0] == b"%d-0" % (start // 4) * 20


# --- bad input ------------------------------------------------------------------


def _flip_crc_field(b: bytes) -> bytes:
    out = bytearray(b)
    out[17] ^= 0xFF
    return bytes(out)


def _flip_record_byte(b: bytes) -> bytes:
    out = bytearray(b)
    out[-2] ^= 0x01
    return bytes(out)


def _wrong_magic(b: bytes) -> bytes:
    out = bytearray(b)
    out[16] = 1
    return bytes(out)


def _length_beyond_end(b: bytes) -> bytes:
    out = bytearray(b)
    struct.pack_into(">i", out, 8, len(b))
    return bytes(out)


BAD_BATCHES = {
    "flipped-crc-field": _flip_crc_field,
    "flipped-record-byte": _flip_record_byte,
    "wrong-magic": _wrong_magic,
    "truncated": lambda b: b[:-5],
    "header-only-part": lambda b: b[:30],
    "length-beyond-end": _length_beyond_end,
    "good-then-corrupt": lambda b: b + _flip_record_byte(b),
    "good-then-garbage": lambda b: b + b"\x00garbage",
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("damage", list(BAD_BATCHES.values()), ids=list(BAD_BATCHES))
async def test_bad_batches_rejected_and_nothing_written(client, topic, damage):
    await client.create_topic(topic)
    good = batch_of(b"good-1", b"good-2")
    await client.produce_batch(topic, 0, good, acks=1)
    before = await read_all(client, topic)
    with pytest.raises(InvalidRequestError, match="records"):
        await client.produce_batch(topic, 0, damage(batch_of(b"bad-1", b"bad-2")), acks=1)
    assert await log_end(client, topic) == 2
    assert await read_all(client, topic) == before
    after = await client.produce_batch(topic, 0, batch_of(b"next"), acks=1)
    assert after.base_offset == 2
    assert values_of(await read_all(client, topic)) == [b"good-1", b"good-2", b"next"]


async def test_batch_over_topic_max_message_bytes(client, topic):
    await client.create_topic(topic, config={"max.message.bytes": "2048"})
    with pytest.raises(RecordTooLargeError, match=r"max\.message\.bytes"):
        await client.produce_batch(topic, 0, batch_of(b"x" * 3000), acks=1)
    small = batch_of(b"y" * 1200)
    with pytest.raises(RecordTooLargeError):
        await client.produce_batch(topic, 0, small + small, acks=1)
    assert await log_end(client, topic) == 0
    ok = await client.produce_batch(topic, 0, small, acks=1)
    assert (ok.base_offset, ok.last_offset) == (0, 0)


async def test_request_over_broker_max_request_bytes(client, topic):
    await client.create_topic(topic)
    huge = batch_of(os.urandom(MAX_REQUEST_BYTES + 10_000))
    with pytest.raises(RecordTooLargeError):
        await client.produce_batch(topic, 0, huge, acks=1)
    assert await log_end(client, topic) == 0
    ok = await client.produce_batch(topic, 0, batch_of(os.urandom(100_000)), acks=1)
    assert ok.base_offset == 0


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"no.such.key": "1"}, "no.such.key"),
        ({"retention.ms": "soon"}, "retention.ms"),
        ({"segment.bytes": "5"}, "segment.bytes"),
        ({"flush.policy": "sometimes"}, "flush.policy"),
    ],
)
async def test_bad_topic_config_rejected_naming_the_key(client, topic, config, named):
    with pytest.raises(InvalidRequestError) as info:
        await client.create_topic(topic, config=config)
    assert named in str(info.value)
    assert topic not in {t.name for t in await client.list_topics()}


async def test_create_topic_twice(client, topic):
    assert await client.create_topic(topic, 2) is True
    with pytest.raises(TopicAlreadyExistsError):
        await client.create_topic(topic, 2)
    assert await client.create_topic(topic, 2, exist_ok=True) is False


async def test_topic_is_served_once_create_topic_answers(broker, topic):
    """Whoever hears "created" or "already exists" can produce to every partition at once."""

    async def create_then_produce(name: str) -> list[str]:
        async with CometClient(broker.address) as c:
            await c.create_topic(name, 8, exist_ok=True)
            problems = []
            for p in range(8):
                try:
                    await c.produce_batch(name, p, batch_of(b"x"), acks=1)
                except TopicNotFoundError as exc:
                    problems.append(f"{name}/{p}: {exc}")
            return problems

    for round_ in range(10):
        name = f"{topic}-{round_}"
        results = await asyncio.gather(*(create_then_produce(name) for _ in range(6)))
        problems = [p for r in results for p in r]
        assert problems == [], problems[:3]


# --- connections ------------------------------------------------------------------


async def test_bootstrap_skips_a_dead_first_address(broker, topic):
    dead = f"127.0.0.1:{free_port()}"
    async with CometClient([dead, broker.address], timeout=5) as c:
        assert await c.create_topic(topic) is True
        assert topic in {t.name for t in await c.list_topics()}
        r = await c.produce_batch(topic, 0, batch_of(b"via the live broker"), acks=1)
        assert r.base_offset == 0
    async with CometClient(f"{dead}, {broker.address}", timeout=5) as c:
        assert values_of((await c.fetch(topic, 0, 0)).records) == [b"via the live broker"]


async def test_no_reachable_bootstrap_broker(topic):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    async with CometClient(dead, timeout=5) as c:
        with pytest.raises(BrokerUnavailableError, match="no bootstrap broker reachable"):
            await c.list_topics()


# --- the synchronous facade --------------------------------------------------------


def test_sync_client_round_trip(broker, topic):
    with sync_client.CometClient(broker.address) as c:
        assert c.create_topic(topic, 2) is True
        assert c.create_topic(topic, 2, exist_ok=True) is False
        r = c.produce_batch(topic, 1, batch_of(b"s1", b"s2"), acks=1)
        assert (r.base_offset, r.last_offset) == (0, 1)
        assert values_of(c.fetch(topic, 1, 0).records) == [b"s1", b"s2"]
        assert c.list_offsets(topic, 1) == 2
        assert c.list_offsets(topic, 0, EARLIEST) == 0
        assert c.describe_topic(topic).partitions[1].log_end_offset == 2
        assert [p.id for p in c.metadata([topic]).topics[topic]] == [0, 1]
        c.delete_topic(topic)
        with pytest.raises(TopicNotFoundError):
            c.describe_topic(topic)
    assert sync_client.create_topic(broker.address, topic, 3) is True
    assert sync_client.create_topic(broker.address, topic, 3) is False
    listed = {t.name: t.partitions for t in sync_client.list_topics(broker.address)}
    assert listed[topic] == 3
    sync_client.delete_topic(broker.address, topic)
    assert topic not in {t.name for t in sync_client.list_topics(broker.address)}
