"""TopicProducer (sync and asyncio) against a real broker."""

from __future__ import annotations

import json
import threading
import time
import zlib

import pytest

from comet import aio
from comet.aio.addresses import parse_addresses
from comet.cli.local_broker import LocalBroker, free_port
from comet.client import (
    BufferFullError,
    CometClient,
    ProducerConfig,
    RecordMetadata,
    TopicProducer,
)
from comet.errors import ClientClosedError
from comet.records import decode_batches


def read_all(address: str, topic: str, partition: int) -> list:
    """Every record of one partition, via raw fetches."""
    with CometClient(address) as client:
        end = client.list_offsets(topic, partition)
        out, offset = [], 0
        while offset < end:
            fetched = client.fetch(topic, partition, offset)
            records = list(decode_batches(fetched.records, offset))
            out.extend(records)
            offset = records[-1].offset + 1
        return out


def config(broker: LocalBroker, topic: str, **kw) -> ProducerConfig:
    kw.setdefault("flush_interval", 0.01)
    return ProducerConfig(broker.address, topic=topic, **kw)


def test_parse_addresses_as_in_the_original() -> None:
    assert parse_addresses("a:6174, b:7000,") == ["a:6174", "b:7000"]
    assert parse_addresses("host") == ["host:6174"]
    with pytest.raises(ValueError, match="port"):
        parse_addresses("a:notaport")


def test_topic_is_created_on_start_and_order_is_kept(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, partitions=3)) as producer:
        assert producer.partitions == 3
        handles = [producer.send(b"same-key", b"%d" % i) for i in range(500)]
    metas = [h.result(5) for h in handles]
    expected_partition = zlib.crc32(b"same-key") % 3
    assert {m.partition for m in metas} == {expected_partition}
    assert [m.offset for m in metas] == list(range(500))
    records = read_all(broker.address, topic, expected_partition)
    assert [r.value for r in records] == [b"%d" % i for i in range(500)]


def test_same_key_same_partition_and_keyless_spread(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, partitions=4, batch_size=10)) as producer:
        keyed = [producer.send(f"user-{i % 7}".encode(), b"x") for i in range(140)]
        keyless = [producer.send(None, b"y") for _ in range(400)]
    for i, h in enumerate(keyed):
        assert h.result(5).partition == zlib.crc32(f"user-{i % 7}".encode()) % 4
    spread = {}
    for h in keyless:
        p = h.result(5).partition
        spread[p] = spread.get(p, 0) + 1
    assert set(spread) == {0, 1, 2, 3}
    assert max(spread.values()) - min(spread.values()) <= 10


def test_explicit_partition_and_out_of_range(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, partitions=2)) as producer:
        assert producer.send(b"k", b"v", partition=1).result(5).partition == 1
        with pytest.raises(ValueError, match=r"partitions 0\.\.1"):
            producer.send(b"k", b"v", partition=2)


def test_close_flushes_what_is_buffered(broker: LocalBroker, topic: str) -> None:
    producer = TopicProducer(config(broker, topic, flush_interval=60.0, batch_size=10_000))
    handles = [producer.send(None, b"%d" % i) for i in range(50)]
    assert not any(h.done() for h in handles)
    producer.close()
    assert all(h.done() for h in handles)
    assert [r.value for r in read_all(broker.address, topic, 0)] == [b"%d" % i for i in range(50)]
    producer.close()  # idempotent


def test_send_after_close_is_a_clear_error(broker: LocalBroker, topic: str) -> None:
    producer = TopicProducer(config(broker, topic))
    producer.close()
    with pytest.raises(ClientClosedError, match="after close"):
        producer.send(b"k", b"v")


def test_flush_by_interval(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, flush_interval=0.05, batch_size=10_000)) as producer:
        handle = producer.send(b"k", b"v")
        meta = handle.result(5)  # no flush(): the interval sends it
        assert meta == RecordMetadata(topic, 0, 0, meta.timestamp)


def test_flush_by_size(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, flush_interval=60.0, batch_size=10)) as producer:
        handles = [producer.send(None, b"v") for _ in range(10)]
        assert handles[-1].result(5).offset == 9  # a full batch goes without waiting 60 s
        straggler = producer.send(None, b"w")
        assert not straggler.done()
        producer.flush(5)
        assert straggler.result(0).offset == 10


def test_buffer_full_waits_then_raises(broker: LocalBroker, topic: str) -> None:
    cfg = config(broker, topic, flush_interval=60.0, buffer_size=5, send_timeout=0.2)
    with TopicProducer(cfg) as producer:
        for _ in range(5):
            producer.send(None, b"v")
        started = time.monotonic()
        with pytest.raises(BufferFullError, match="still full"):
            producer.send(None, b"v")
        assert time.monotonic() - started >= 0.2


def test_delivery_callbacks_and_serializers(broker: LocalBroker, topic: str) -> None:
    reports: list[tuple] = []
    done = threading.Event()

    def on_delivery(meta, error) -> None:
        reports.append((meta, error))
        if len(reports) == 3:
            done.set()

    cfg = config(
        broker,
        topic,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    with TopicProducer(cfg) as producer:
        for i in range(3):
            producer.send("key", {"n": i}, on_delivery=on_delivery)
        assert done.wait(5)
    assert [(m.offset, e) for m, e in reports] == [(0, None), (1, None), (2, None)]
    assert [r.value for r in read_all(broker.address, topic, 0)] == [
        b'{"n": 0}',
        b'{"n": 1}',
        b'{"n": 2}',
    ]


def test_concurrent_producers_lose_nothing(broker: LocalBroker, topic: str) -> None:
    per_thread = 2_000

    failures: list[BaseException] = []

    def produce(n: int) -> None:
        with TopicProducer(config(broker, topic, partitions=2)) as producer:
            handles = [
                producer.send(f"t{n}".encode(), f"{n}:{i}".encode()) for i in range(per_thread)
            ]
        failures.extend(e for h in handles if (e := h.exception(0)) is not None)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    values = [r.value.decode() for p in (0, 1) for r in read_all(broker.address, topic, p)]
    assert len(values) == 4 * per_thread
    for n in range(4):
        mine = [int(v.split(":")[1]) for v in values if v.startswith(f"{n}:")]
        assert mine == list(range(per_thread))  # one key: one partition, in order


def test_dead_first_bootstrap_address_is_skipped(broker: LocalBroker, topic: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cfg = ProducerConfig([dead, broker.address], topic=topic, flush_interval=0.01)
    with TopicProducer(cfg) as producer:
        assert producer.send(b"k", b"v").result(5).offset == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("topic", "", "topic"),
        ("buffer_size", 0, "buffer_size"),
        ("acks", 2, "acks"),
        ("compression", "brotli", "compression"),
        ("flush_interval", -1, "flush_interval"),
    ],
)
def test_config_errors_name_the_field(field: str, value, message: str) -> None:
    cfg = ProducerConfig("localhost:6174", topic="t")
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=message):
        cfg.validate()


async def test_asyncio_producer(broker: LocalBroker, topic: str) -> None:
    cfg = ProducerConfig(broker.address, topic=topic, partitions=2, acks="all", compression="zstd")
    async with aio.TopicProducer(cfg) as producer:
        meta = await producer.send_and_wait(b"k", b"v")
        handles = await producer.send_batch([(b"k", b"%d" % i) for i in range(100)])
        metas = [await h for h in handles]
    assert [m.offset for m in metas] == list(range(meta.offset + 1, meta.offset + 101))
    assert {m.partition for m in metas} == {meta.partition}
