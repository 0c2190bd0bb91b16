"""Idempotent producing against a real broker: retries are deduplicated, gaps and stale
epochs refused, and the broker still recognises retries after a restart."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from comet.aio import CometClient, ProducerConfig, TopicProducer
from comet.aio.producer import IDEMPOTENT_BATCHES_PER_REQUEST
from comet.broker.producer_state import CACHED_BATCHES
from comet.cli.local_broker import LocalBroker
from comet.errors import (
    InvalidRequestError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    RequestTimeoutError,
)
from comet.records import Record, RecordBatchBuilder, decode_batches, iter_batches


def batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    """A batch stamped as an idempotent producer would stamp it."""
    builder = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for value in values:
        builder.append(None, value)
    return builder.build()


async def stored(client: CometClient, topic: str, partition: int = 0) -> tuple[list[Record], set]:
    """Every record of a partition and the producer ids of its batches."""
    records: list[Record] = []
    producer_ids = set()
    offset = 0
    while True:
        fetched = await client.fetch(topic, partition, offset)
        if offset >= fetched.high_watermark:
            return records, producer_ids
        producer_ids |= {h.producer_id for _, h in iter_batches(fetched.records)}
        records.extend(decode_batches(fetched.records, offset))
        offset = records[-1].offset + 1


@pytest.fixture
async def client(broker):
    async with CometClient(broker.address, timeout=10) as c:
        yield c


async def test_the_same_batch_twice_is_stored_once_at_the_same_offsets(client, topic):
    await client.create_topic(topic)
    await client.produce_batch(topic, 0, batch(-1, -1, -1, b"someone else"), acks=1)
    pid, epoch = await client.init_producer_id()
    assert pid >= 0 and epoch == 0
    assert (await client.init_producer_id())[0] != pid  # every producer gets its own id
    first = batch(pid, epoch, 0, b"a", b"b", b"c")
    r1 = await client.produce_batch(topic, 0, first, acks="all")
    r2 = await client.produce_batch(topic, 0, first, acks="all")
    assert (r1.base_offset, r1.last_offset) == (r2.base_offset, r2.last_offset) == (1, 3)
    r3 = await client.produce_batch(topic, 0, batch(pid, epoch, 3, b"d"), acks=1)
    assert r3.base_offset == 4
    records, _ = await stored(client, topic)
    assert [r.value for r in records] == [b"someone else", b"a", b"b", b"c", b"d"]


async def test_a_gap_and_a_stale_epoch_are_refused_and_nothing_is_written(client, topic):
    await client.create_topic(topic)
    pid, _ = await client.init_producer_id()
    await client.produce_batch(topic, 0, batch(pid, 1, 0, b"a", b"b"), acks=1)
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 2, received 5") as err:
        await client.produce_batch(topic, 0, batch(pid, 1, 5, b"gap"), acks=1)
    assert not err.value.retriable
    with pytest.raises(ProducerFencedError, match="epoch 0 is older"):
        await client.produce_batch(topic, 0, batch(pid, 0, 2, b"zombie"), acks=1)
    records, _ = await stored(client, topic)
    assert [r.value for r in records] == [b"a", b"b"]


class LosingAcks(CometClient):
    """Loses the acknowledgement of each request's first attempt, after the broker wrote it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[bytes] = set()
        self.lost = 0
        self.batches_per_request: list[int] = []

    async def produce_batch(self, topic, partition, records, **kwargs):
        self.batches_per_request.append(len(list(iter_batches(records))))
        result = await super().produce_batch(topic, partition, records, **kwargs)
        digest = hashlib.sha256(records).digest()
        if digest not in self.seen:
            self.seen.add(digest)
            self.lost += 1
            raise RequestTimeoutError("injected: the acknowledgement was lost")
        return result


async def produce_with_lost_acks(
    broker, topic, *, idempotent: bool
) -> tuple[list, dict, LosingAcks]:
    """Send 600 records over 3 partitions through LosingAcks; (metadata, stored, client)."""
    lossy = LosingAcks(broker.address, timeout=10)
    config = ProducerConfig(
        broker.address,
        topic=topic,
        partitions=3,
        batch_size=40,
        flush_interval=0.005,
        retry_backoff=0.001,
        enable_idempotence=idempotent,
    )
    try:
        async with TopicProducer(config, client=lossy) as producer:
            handles = await producer.send_batch((b"k%d" % i, b"v%d" % i) for i in range(600))
            await producer.flush()
            metadata = [await handle for handle in handles]
        assert lossy.lost >= 3
        contents = {p: (await stored(lossy, topic, p))[0] for p in range(3)}
    finally:
        await lossy.close()
    return metadata, contents, lossy


async def test_retried_batches_after_lost_acks_are_not_duplicated(broker, topic):
    metadata, contents, lossy = await produce_with_lost_acks(broker, topic, idempotent=True)
    # requests carried several batches (retried whole), never more than the broker remembers
    assert 1 < max(lossy.batches_per_request) <= IDEMPOTENT_BATCHES_PER_REQUEST <= CACHED_BATCHES
    values = Counter(r.value for records in contents.values() for r in records)
    assert values == Counter(b"v%d" % i for i in range(600))  # each record exactly once
    for i, meta in enumerate(metadata):  # and each handle reports where it is stored
        record = contents[meta.partition][meta.offset]
        assert (record.offset, record.key, record.value) == (meta.offset, b"k%d" % i, b"v%d" % i)


async def test_without_idempotence_the_same_retries_duplicate(broker, topic):
    _, contents, _ = await produce_with_lost_acks(broker, topic, idempotent=False)
    values = Counter(r.value for records in contents.values() for r in records)
    assert sum(values.values()) > 600 and set(values) == {b"v%d" % i for i in range(600)}


class FailsOnce(CometClient):
    """Refuses the second produce call before sending it, as a non-retriable error."""

    calls = 0

    async def produce_batch(self, topic, partition, records, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise InvalidRequestError("injected: refused")
        return await super().produce_batch(topic, partition, records, **kwargs)


async def test_after_a_failed_batch_the_producer_continues_with_a_new_id(broker, topic):
    failing = FailsOnce(broker.address, timeout=10)
    config = ProducerConfig(broker.address, topic=topic, flush_interval=0.005)
    try:
        async with TopicProducer(config, client=failing) as producer:
            assert (await producer.send_and_wait(None, b"first")).offset == 0
            with pytest.raises(InvalidRequestError, match="injected"):
                await producer.send_and_wait(None, b"lost")
            # its sequence was used: the same id would leave a gap, a new one starts at 0
            assert (await producer.send_and_wait(None, b"kept")).offset == 1
            assert (await producer.send_and_wait(None, b"next")).offset == 2
        records, producer_ids = await stored(failing, topic)
    finally:
        await failing.close()
    assert [r.value for r in records] == [b"first", b"kept", b"next"]
    assert len(producer_ids) == 2 and min(producer_ids) >= 0


def test_idempotence_limits_max_in_flight():
    ProducerConfig(topic="t", max_in_flight=5).validate()
    ProducerConfig(topic="t", max_in_flight=9, enable_idempotence=False).validate()
    with pytest.raises(ValueError, match="max_in_flight: must be <= 5 with enable_idempotence"):
        ProducerConfig(topic="t", max_in_flight=6).validate()


def test_idempotence_follows_acks_all_as_in_kafka():
    assert ProducerConfig(topic="t").idempotent  # acks="all" by default
    assert not ProducerConfig(topic="t", acks=1).idempotent
    assert not ProducerConfig(topic="t", enable_idempotence=False).idempotent
    ProducerConfig(topic="t", acks=1, max_in_flight=9).validate()
    with pytest.raises(ValueError, match="enable_idempotence: needs acks='all'"):
        ProducerConfig(topic="t", acks=1, enable_idempotence=True).validate()


async def test_a_restarted_broker_still_deduplicates(tmp_path: Path, topic):
    local = LocalBroker(data_dir=tmp_path / "data", log_path=tmp_path / "broker.log")
    local.start()
    try:
        async with CometClient(local.address, timeout=10) as client:
            await client.create_topic(topic)
            pid, epoch = await client.init_producer_id()
            acked = batch(pid, epoch, 0, b"a", b"b")
            r1 = await client.produce_batch(topic, 0, acked, acks="all")
            await client.produce_batch(topic, 0, batch(-1, -1, -1, b"other"), acks=1)
        for restart in (local.stop, local.kill):
            restart()
            local.start()
            async with CometClient(local.address, timeout=10) as client:
                again = await client.produce_batch(topic, 0, acked, acks="all")
                assert (again.base_offset, again.last_offset) == (r1.base_offset, r1.last_offset)
                records, _ = await stored(client, topic)
                assert [r.value for r in records] == [b"a", b"b", b"other"]
        async with CometClient(local.address, timeout=10) as client:
            with pytest.raises(OutOfOrderSequenceError, match="expected sequence 2"):
                await client.produce_batch(topic, 0, batch(pid, epoch, 3, b"gap"), acks=1)
    finally:
        local.stop()
