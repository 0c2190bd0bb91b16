"""SIGKILL a real broker while produces are in flight; nothing acknowledged may be lost.

Each round starts a broker on the same data directory, runs concurrent
producers (acks=1, default flush policy "batch") that record every
acknowledged batch, kills the broker with SIGKILL once a seeded number of
acks has arrived, and restarts it. After every restart the whole log is read
back and checked against every ack of every round so far.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from comet.aio import CometClient
from comet.cli.local_broker import LocalBroker
from comet.errors import CometError
from comet.records import decode_batches, encode_batch, validate_batches

pytestmark = pytest.mark.integration

ROUNDS = 3
PARTITIONS = 3
PRODUCERS_PER_PARTITION = 2
MAX_BATCHES_PER_PRODUCER = 300
ROUND_LIMIT_S = 5.0
TOPIC = "crash"


@dataclass(frozen=True)
class Ack:
    partition: int
    base_offset: int
    last_offset: int
    values: tuple[bytes, ...]


@dataclass
class History:
    acks: list[Ack]
    sent: set[bytes]


async def produce_until_killed(
    client: CometClient,
    partition: int,
    name: str,
    rng: random.Random,
    history: History,
    enough: asyncio.Event,
    target: int,
    deadline: float,
) -> int:
    """Send batches until the broker goes away; returns the number of failed sends."""
    loop = asyncio.get_running_loop()
    for seq in range(MAX_BATCHES_PER_PRODUCER):
        if loop.time() > deadline:
            return 0
        values = tuple(f"{name}-{seq}-{i}".encode() for i in range(rng.randint(1, 20)))
        if rng.random() < 0.25:  # sometimes two batches in one request
            cut = len(values) // 2 or 1
            payload = encode_batch((None, v) for v in values[:cut])
            if values[cut:]:
                payload += encode_batch((None, v) for v in values[cut:])
        else:
            payload = encode_batch((None, v) for v in values)
        history.sent.update(values)
        try:
            r = await client.produce_batch(TOPIC, partition, payload, acks=1)
        except CometError:
            return 1
        assert r.last_offset - r.base_offset + 1 == len(values)
        history.acks.append(Ack(partition, r.base_offset, r.last_offset, values))
        if len(history.acks) >= target:
            enough.set()
    return 0


async def read_partition(client: CometClient, partition: int) -> tuple[list, int]:
    """(records, high watermark) of a whole partition; every fetched batch must be CRC-valid."""
    records = []
    offset = 0
    for _ in range(10_000):
        res = await client.fetch(TOPIC, partition, offset)
        if not res.records:
            break
        validate_batches(res.records, producer=False)
        page = list(decode_batches(res.records, offset))
        assert page, f"fetch at {offset} returned batches but no records at or after it"
        records += page
        offset = page[-1].offset + 1
        if offset >= res.high_watermark:
            break
    latest = await client.list_offsets(TOPIC, partition)
    return records, latest


async def verify(address: str, history: History) -> tuple[str, str]:
    """Check the whole log against `history`; return (broker id, cluster id)."""
    async with CometClient(address, timeout=10) as client:
        seen: set[bytes] = set()
        for partition in range(PARTITIONS):
            records, end = await read_partition(client, partition)
            offsets = [r.offset for r in records]
            assert offsets == list(range(len(records))), f"gap or reorder in p{partition}"
            assert end == len(records), f"p{partition}: log end {end}, readable {len(records)}"
            for r in records:
                assert r.value in history.sent, f"p{partition}@{r.offset}: unknown {r.value!r}"
                assert r.value not in seen, f"p{partition}@{r.offset}: duplicate {r.value!r}"
                seen.add(r.value)
            for ack in (a for a in history.acks if a.partition == partition):
                assert ack.last_offset < len(records), f"acknowledged {ack} lost"
                got = tuple(r.value for r in records[ack.base_offset : ack.last_offset + 1])
                assert got == ack.values, f"acknowledged {ack} stored as {got}"
        meta = await client.metadata()
        return meta.brokers[0].id, meta.cluster_id


async def test_sigkill_during_produce_loses_no_acknowledged_record(tmp_path: Path):
    rng = random.Random(20240607)
    data = tmp_path / "data"
    history = History([], set())

    def new_broker(n: int) -> LocalBroker:
        return LocalBroker(data_dir=data, log_path=tmp_path / f"broker-{n}.log")

    broker = new_broker(0)
    await asyncio.to_thread(broker.start)
    try:
        async with CometClient(broker.address) as client:
            await client.create_topic(TOPIC, PARTITIONS)
            meta = await client.metadata()
            identity = (meta.brokers[0].id, meta.cluster_id)
        for rnd in range(ROUNDS):
            loop = asyncio.get_running_loop()
            target = len(history.acks) + rng.randint(15, 60)
            enough = asyncio.Event()
            deadline = loop.time() + ROUND_LIMIT_S
            async with CometClient(broker.address, timeout=5) as client:
                producers = [
                    asyncio.create_task(
                        produce_until_killed(
                            client,
                            p,
                            f"r{rnd}-p{p}-w{w}",
                            random.Random(rng.random()),
                            history,
                            enough,
                            target,
                            deadline,
                        )
                    )
                    for p in range(PARTITIONS)
                    for w in range(PRODUCERS_PER_PARTITION)
                ]
                try:
                    await asyncio.wait_for(enough.wait(), ROUND_LIMIT_S)
                finally:
                    broker.kill()  # SIGKILL with produces in flight
                async with asyncio.timeout(ROUND_LIMIT_S + 10):
                    failed = sum(await asyncio.gather(*producers))
            # the kill interrupted the producers, not the round's time limit
            assert failed >= 1
            assert len(history.acks) >= target
            broker = new_broker(rnd + 1)
            await asyncio.to_thread(broker.start)
            # broker and cluster keep their ids (stored in the data directory) across restarts
            assert await verify(broker.address, history) == identity
        assert len({a.partition for a in history.acks}) == PARTITIONS
    finally:
        code = await asyncio.to_thread(broker.stop)
    assert code == 0


async def test_sigterm_during_produce_exits_zero_and_keeps_every_ack(tmp_path: Path):
    """A graceful stop with produces in flight: exit 0, every ack kept, no torn tail."""
    rng = random.Random(99)
    data = tmp_path / "data"
    history = History([], set())
    broker = LocalBroker(data_dir=data, log_path=tmp_path / "first.log")
    await asyncio.to_thread(broker.start)
    try:
        loop = asyncio.get_running_loop()
        enough = asyncio.Event()
        async with CometClient(broker.address, timeout=5) as client:
            await client.create_topic(TOPIC, PARTITIONS)
            producers = [
                asyncio.create_task(
                    produce_until_killed(
                        client,
                        p,
                        f"p{p}-w{w}",
                        random.Random(rng.random()),
                        history,
                        enough,
                        40,
                        loop.time() + ROUND_LIMIT_S,
                    )
                )
                for p in range(PARTITIONS)
                for w in range(PRODUCERS_PER_PARTITION)
            ]
            await asyncio.wait_for(enough.wait(), ROUND_LIMIT_S)
            started = loop.time()
            code = await asyncio.to_thread(broker.stop)
            assert loop.time() - started < 5
            async with asyncio.timeout(ROUND_LIMIT_S + 10):
                failed = sum(await asyncio.gather(*producers))
        assert code == 0, broker.log_text()[-3000:]
        assert failed >= 1  # the stop interrupted them
    finally:
        broker.kill()
    again = LocalBroker(data_dir=data, log_path=tmp_path / "second.log")
    await asyncio.to_thread(again.start)
    try:
        await verify(again.address, history)
        assert '"segment.truncated"' not in again.log_text()
    finally:
        assert await asyncio.to_thread(again.stop) == 0
