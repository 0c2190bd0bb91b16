"""Consumer (sync and asyncio) with consumer groups, against real brokers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from comet import aio
from comet.cli.local_broker import LocalBroker
from comet.client import (
    CometClient,
    Consumer,
    ConsumerConfig,
    Message,
    ProducerConfig,
    TopicProducer,
)
from comet.errors import StaleGenerationError
from tests.polling import wait_for

HERE = Path(__file__).resolve().parent


def produce(address: str, topic: str, n: int, partitions: int = 1, start: int = 0) -> None:
    cfg = ProducerConfig(address, topic=topic, partitions=partitions, flush_interval=0.01)
    with TopicProducer(cfg) as producer:
        for i in range(start, start + n):
            producer.send(b"k%d" % (i % 16), b"%d" % i)


def fast(address: str, group: str, **kw) -> ConsumerConfig:
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("session_timeout", 3.0)
    return ConsumerConfig(address, group=group, **kw)


def test_handler_sees_every_record_in_partition_order(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 300, partitions=3)
    seen: list[Message] = []
    with Consumer(fast(broker.address, f"g-{topic}")) as consumer:
        consumer.subscribe(topic, seen.append)
        wait_for(lambda: len(seen) >= 300, 20, "300 records")
    assert sorted(int(m.value) for m in seen) == list(range(300))
    for p in range(3):
        offsets = [m.offset for m in seen if m.partition == p]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert all(m.topic == topic and m.timestamp > 0 for m in seen)


def test_two_members_split_partitions_and_see_everything(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 1, partitions=4)  # creates the topic
    group = f"g-{topic}"
    a_seen: list[Message] = []
    b_seen: list[Message] = []
    with Consumer(fast(broker.address, group)) as a, Consumer(fast(broker.address, group)) as b:
        a.subscribe(topic, a_seen.append)
        b.subscribe(topic, b_seen.append)
        wait_for(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2, 15, "a 2+2 split")
        assert a.assignment() | b.assignment() == {(topic, p) for p in range(4)}
        produce(broker.address, topic, 400, partitions=4, start=1)
        wait_for(lambda: len(a_seen) + len(b_seen) >= 401, 20, "401 records")
    values = sorted(int(m.value) for m in a_seen + b_seen)
    assert values == list(range(401))
    after_split = [{m.partition for m in seen if int(m.value) > 0} for seen in (a_seen, b_seen)]
    assert after_split[0].isdisjoint(after_split[1])


def test_subscribed_before_the_topic_exists(broker: LocalBroker, topic: str) -> None:
    seen: list[Message] = []
    with Consumer(fast(broker.address, f"g-{topic}")) as consumer:
        consumer.subscribe(topic, seen.append)
        produce(broker.address, topic, 20, partitions=2)
        wait_for(lambda: len(seen) >= 20, 20, "records of a topic created after subscribe")
    assert sorted(int(m.value) for m in seen) == list(range(20))


def test_subscription_errors_and_resubscribe(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 5)
    with Consumer(fast(broker.address, f"g-{topic}")) as consumer:
        seen: list[Message] = []
        consumer.subscribe(topic, seen.append)
        with pytest.raises(ValueError, match="already subscribed"):
            consumer.subscribe(topic, seen.append)
        with pytest.raises(ValueError, match="not subscribed"):
            consumer.unsubscribe("other-topic")
        wait_for(lambda: len(seen) == 5, 15, "5 records")
        consumer.unsubscribe(topic)
        wait_for(lambda: not consumer.assignment(), 5, "no assignment after unsubscribe")
        produce(broker.address, topic, 5, start=5)
        again: list[Message] = []
        consumer.subscribe(topic, again.append)
        wait_for(lambda: len(again) == 5, 15, "the 5 new records after resubscribe")
    assert [int(m.value) for m in again] == [5, 6, 7, 8, 9]


def test_auto_commit_after_handling(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 50)
    group = f"g-{topic}"
    seen: list[Message] = []
    cfg = fast(broker.address, group, auto_commit_every=10, auto_commit_interval=0.1)
    with Consumer(cfg) as consumer, CometClient(broker.address) as client:
        consumer.subscribe(topic, seen.append)
        wait_for(
            lambda: client.fetch_offsets(group, {topic: [0]}).get((topic, 0)) == 50,
            15,
            "offset 50 committed",
        )


def test_a_failing_handler_is_retried_not_skipped(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 3)
    attempts: dict[int, int] = {}
    handled: list[int] = []

    def flaky(message: Message) -> None:
        n = int(message.value)
        attempts[n] = attempts.get(n, 0) + 1
        if n == 1 and attempts[n] < 3:
            raise RuntimeError("transient")
        handled.append(n)

    with Consumer(fast(broker.address, f"g-{topic}", backoff=0.01)) as consumer:
        consumer.subscribe(topic, flaky)
        wait_for(lambda: len(handled) == 3, 15, "3 handled records")
    assert handled == [0, 1, 2]
    assert attempts[1] == 3


def test_sync_iterator(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 10)
    got = []
    with Consumer(fast(broker.address, f"g-{topic}")) as consumer:
        for message in consumer.messages(topic):
            got.append(int(message.value))
            if len(got) == 10:
                break
    assert got == list(range(10))


async def test_async_iterator_and_stale_generation(broker: LocalBroker, topic: str) -> None:
    await asyncio.to_thread(produce, broker.address, topic, 10)
    group = f"g-{topic}"
    async with aio.Consumer(fast(broker.address, group)) as consumer:
        got = []
        async for message in consumer.messages(topic):
            got.append(int(message.value))
            if len(got) == 10:
                break
        assert got == list(range(10))
        old_generation = consumer.generation
        async with aio.Consumer(fast(broker.address, group)) as other:
            await other.subscribe(topic, lambda m: None)
            await other.wait_for_assignment(10)  # a rebalance happened: a new generation
            async with aio.CometClient(broker.address) as client:
                with pytest.raises(StaleGenerationError, match="generation"):
                    await client.commit_offsets(
                        group,
                        {(topic, 0): 1},
                        member_id=consumer.member_id,
                        generation=old_generation,
                    )


def test_offsets_survive_a_broker_restart(tmp_path: Path, topic: str) -> None:
    group = f"g-{topic}"
    with LocalBroker(data_dir=tmp_path / "data") as broker:
        produce(broker.address, topic, 30)
        seen: list[Message] = []
        with Consumer(fast(broker.address, group)) as consumer:
            consumer.subscribe(topic, seen.append)
            wait_for(lambda: len(seen) == 30, 15, "30 records")
        port = broker.port
    with LocalBroker(data_dir=tmp_path / "data", port=port) as broker:
        produce(broker.address, topic, 5, start=30)
        after: list[Message] = []
        with Consumer(fast(broker.address, group)) as consumer:
            consumer.subscribe(topic, after.append)
            wait_for(lambda: len(after) >= 5, 15, "the 5 new records")
        assert [int(m.value) for m in after] == [30, 31, 32, 33, 34]


def test_killed_member_partitions_move_and_nothing_is_lost(broker: LocalBroker, topic: str) -> None:
    produce(broker.address, topic, 1, partitions=2)
    group = f"g-{topic}"
    child = subprocess.Popen(
        [sys.executable, str(HERE / "consumer_child.py"), broker.address, topic, group],
        stdout=subprocess.PIPE,
        text=True,
    )
    child_seen: list[tuple[int, int]] = []
    reader = threading.Thread(
        target=lambda: child_seen.extend(
            tuple(map(int, line.split()))
            for line in child.stdout  # type: ignore[union-attr]
        ),
        daemon=True,
    )
    reader.start()
    survivor_seen: list[Message] = []
    try:
        with Consumer(fast(broker.address, group, session_timeout=2.0)) as survivor:
            survivor.subscribe(topic, survivor_seen.append)
            wait_for(lambda: len(survivor.assignment()) == 1, 20, "a 1+1 split with the child")
            produce(broker.address, topic, 200, partitions=2, start=1)
            wait_for(lambda: len(child_seen) > 0, 20, "the child to handle records")
            child.kill()
            child.wait()
            killed_at = time.monotonic()
            wait_for(lambda: len(survivor.assignment()) == 2, 10, "both partitions moved")
            moved_after = time.monotonic() - killed_at
            wait_for(
                lambda: (
                    {int(m.value) for m in survivor_seen} | {o for p, o in child_seen if p == -1}
                    >= set()
                ),
                1,
                "",
            )
            produce(broker.address, topic, 50, partitions=2, start=201)
            all_values = set(range(251))
            wait_for(
                lambda: (
                    {int(m.value) for m in survivor_seen} | child_values(child_seen, broker, topic)
                    >= all_values
                ),
                20,
                "every record seen by one of the members",
            )
    finally:
        if child.poll() is None:
            child.kill()
    assert moved_after < 2.0 + 3.0  # session timeout plus the rebalance


def child_values(child_seen: list[tuple[int, int]], broker: LocalBroker, topic: str) -> set[int]:
    """Values of the records the child handled (it printed partition and offset)."""
    from comet.records import decode_batches

    values = set()
    with CometClient(broker.address) as client:
        for partition, offset in list(child_seen):
            fetched = client.fetch(topic, partition, offset)
            for record in decode_batches(fetched.records, offset):
                values.add(int(record.value))
                break
    return values


def test_batches_deliver_everything_and_commit_after_the_next_is_asked(
    broker: LocalBroker, topic: str
) -> None:
    produce(broker.address, topic, 250)
    group = f"g-{topic}"
    got: list[int] = []
    cfg = fast(broker.address, group, max_poll_records=100, enable_auto_commit=False)
    with Consumer(cfg) as consumer, CometClient(broker.address) as client:
        batches = consumer.batches(topic)
        first = next(batches)
        assert first.topic == topic and first.partition == 0
        got += [int(r.value) for r in first.records]
        consumer.commit()  # the first batch is still in hand: nothing to commit
        assert client.fetch_offsets(group, {topic: [0]}).get((topic, 0), -1) == -1
        for batch in batches:
            got += [int(r.value) for r in batch.records]
            if len(got) >= 250:
                break
        consumer.commit()  # everything before the last batch was handled
        committed = client.fetch_offsets(group, {topic: [0]})[(topic, 0)]
    assert got == list(range(250))
    assert 0 < committed < 250 and committed == 250 - len(batch.records)


async def test_async_batches(broker: LocalBroker, topic: str) -> None:
    await asyncio.to_thread(produce, broker.address, topic, 120)
    seen = 0
    async with aio.Consumer(fast(broker.address, f"g-{topic}")) as consumer:
        async for batch in consumer.batches(topic):
            assert all(r.offset >= 0 and r.timestamp > 0 for r in batch.records)
            seen += len(batch.records)
            if seen >= 120:
                break
    assert seen == 120
