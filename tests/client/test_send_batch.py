"""send_batch: the bulk path lands records exactly where per-record sends would, in order."""

from __future__ import annotations

import zlib

import pytest

from comet import aio
from comet.aio.delivery import DeliveryHandles, ProducerBatch
from comet.cli.local_broker import LocalBroker
from comet.client import ProducerConfig, TopicProducer
from comet.errors import ClientClosedError, RequestTimeoutError
from comet.records import RecordBatchBuilder
from tests.client.test_producer import read_all


def config(broker: LocalBroker, topic: str, **kw) -> ProducerConfig:
    kw.setdefault("flush_interval", 0.01)
    return ProducerConfig(broker.address, topic=topic, **kw)


def test_keyed_records_go_to_their_partitions_in_order(broker: LocalBroker, topic: str) -> None:
    keys = [b"k%d" % (i % 7) for i in range(700)]
    with TopicProducer(config(broker, topic, partitions=3, batch_size=50)) as producer:
        handles = producer.send_batch([(k, b"%d" % i) for i, k in enumerate(keys)])
        metas = [h.result(10) for h in handles]
    assert len(handles) == 700
    assert [m.partition for m in metas] == [zlib.crc32(k) % 3 for k in keys]
    for p in range(3):
        stored = read_all(broker.address, topic, p)
        expected = [(k, b"%d" % i) for i, k in enumerate(keys) if zlib.crc32(k) % 3 == p]
        assert [(r.key, r.value) for r in stored] == expected
        assert [r.offset for r in stored] == [m.offset for m in metas if m.partition == p]


def test_keyless_and_keyed_mixed_keep_the_order_of_each_partition(
    broker: LocalBroker, topic: str
) -> None:
    records = [(None if i % 3 else b"key", b"%d" % i) for i in range(300)]
    with TopicProducer(config(broker, topic, partitions=2, batch_size=40)) as producer:
        producer.send(None, b"before")
        handles = producer.send_batch(records)
        metas = [h.result(10) for h in handles]
    keyed = zlib.crc32(b"key") % 2
    assert all(m.partition == keyed for m, (k, _) in zip(metas, records, strict=True) if k)
    seen = [(r.value, r.offset) for p in range(2) for r in read_all(broker.address, topic, p)]
    assert sorted(v for v, _ in seen) == sorted([b"before"] + [v for _, v in records])
    for p in range(2):
        values = [r.value for r in read_all(broker.address, topic, p) if r.value != b"before"]
        assert values == [v for (_, v), m in zip(records, metas, strict=True) if m.partition == p]


def test_a_batch_larger_than_the_buffer_waits_for_room(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, buffer_size=64, batch_size=16)) as producer:
        handles = producer.send_batch([(None, b"%05d" % i) for i in range(1000)])
        metas = [h.result(10) for h in handles]
    assert [m.offset for m in metas] == list(range(1000))
    assert [r.value for r in read_all(broker.address, topic, 0)] == [
        b"%05d" % i for i in range(1000)
    ]


def test_batches_split_at_max_batch_bytes(broker: LocalBroker, topic: str) -> None:
    value = b"x" * 3000
    with TopicProducer(config(broker, topic, max_batch_bytes=10_000, batch_size=1000)) as p:
        handles = p.send_batch([(None, value)] * 20)
        metas = [h.result(10) for h in handles]
    assert [m.offset for m in metas] == list(range(20))
    assert len(read_all(broker.address, topic, 0)) == 20


def test_handles_index_slice_and_iterate_lazily(broker: LocalBroker, topic: str) -> None:
    with TopicProducer(config(broker, topic, batch_size=10)) as producer:
        handles = producer.send_batch([(None, b"%d" % i) for i in range(35)])
        assert "35 records in 4 batches" in repr(handles)
        assert handles[-1].result(10).offset == 34
        assert [h.result(10).offset for h in handles[10:13]] == [10, 11, 12]
        assert [h.result(10).offset for h in handles] == list(range(35))
        assert handles.done()
        with pytest.raises(IndexError):
            handles[35]
        with pytest.raises(ClientClosedError):
            producer.close()
            producer.send_batch([(None, b"late")])


async def test_async_send_batch_wait_and_serializers(broker: LocalBroker, topic: str) -> None:
    cfg = config(broker, topic, value_serializer=lambda v: str(v).encode(), batch_size=100)
    async with aio.TopicProducer(cfg) as producer:
        handles = await producer.send_batch((None, i) for i in range(250))
        await handles.wait()
        assert (await handles[249]).offset == 249
    assert [r.value for r in read_all(broker.address, topic, 0)] == [
        str(i).encode() for i in range(250)
    ]


async def test_wait_raises_the_first_delivery_error() -> None:
    ok = ProducerBatch("t", 0, RecordBatchBuilder(), 0.0)
    failed = ProducerBatch("t", 1, RecordBatchBuilder(), 0.0)
    ok.timestamps += [7, 7]
    failed.timestamps += [7, 7, 7]
    handles = DeliveryHandles()
    handles.add_span(ok, 0, 2)
    handles.add_span(failed, 0, 3)
    handles.add_span(ok, 2, 0)  # empty spans are not kept
    assert len(handles) == 5 and not handles.done()
    ok.complete(100)
    failed.complete(-1, RequestTimeoutError("not delivered"))
    assert handles.done()
    with pytest.raises(RequestTimeoutError, match="not delivered"):
        await handles.wait()
    assert handles[1].result(0).offset == 101
    assert handles[4].exception(0) is failed.error
