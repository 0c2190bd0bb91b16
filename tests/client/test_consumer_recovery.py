"""Consumer group membership recovers from failures between joining and fetching."""

from __future__ import annotations

import asyncio
from typing import Any

from comet import aio
from comet.cli.local_broker import LocalBroker
from comet.errors import BrokerUnavailableError
from comet.records import encode_batch

TIMEOUT_S = 15.0


async def test_a_failed_read_of_committed_offsets_after_joining_is_retried(
    broker: LocalBroker, topic: str
) -> None:
    # Found by the fault harness: an etcd restart made the offset read that follows a
    # join fail; the member stayed in the group, heartbeating, with no fetchers and no
    # rejoin, so its partitions were never consumed again.
    group = f"g-{topic}"
    async with aio.CometClient(broker.address) as client:
        await client.create_topic(topic, 2)
        await client.produce_batch(topic, 1, encode_batch([(None, b"after")]), acks=1)
        real_fetch_offsets = client.fetch_offsets
        calls = 0

        async def flaky_fetch_offsets(*args: Any, **kwargs: Any) -> dict[tuple[str, int], int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise BrokerUnavailableError("cluster metadata store unavailable: etcd restarting")
            return await real_fetch_offsets(*args, **kwargs)

        client.fetch_offsets = flaky_fetch_offsets  # type: ignore[method-assign]
        config = aio.ConsumerConfig(
            broker.address, group=group, poll_interval=0.1, session_timeout=3.0, backoff=0.05
        )
        async with aio.Consumer(config, client=client) as consumer:
            stream = consumer.messages(topic)
            message = await asyncio.wait_for(anext(stream), TIMEOUT_S)
            assert message.value == b"after"
            assert calls >= 2
            assert consumer.assignment() == frozenset({(topic, 0), (topic, 1)})


async def test_a_failed_offset_reset_is_retried_not_the_end_of_the_partition(
    broker: LocalBroker, topic: str
) -> None:
    # Found reading the fetch loop while chasing the harness's unseen records: a failure
    # of the offset lookup that follows "offset out of range" ended the partition's
    # fetcher silently; its records were never delivered again.
    group = f"g-{topic}"
    async with aio.CometClient(broker.address) as client:
        await client.create_topic(topic, 1)
        await client.produce_batch(topic, 0, encode_batch([(None, b"first")]), acks=1)
        await client.commit_offsets(group, {(topic, 0): 100})  # beyond the end: a reset
        real_list_offsets = client.list_offsets
        calls = 0

        async def flaky_list_offsets(*args: Any, **kwargs: Any) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise BrokerUnavailableError("leader moving")
            return await real_list_offsets(*args, **kwargs)

        client.list_offsets = flaky_list_offsets  # type: ignore[method-assign]
        config = aio.ConsumerConfig(
            broker.address, group=group, poll_interval=0.1, session_timeout=3.0, backoff=0.05
        )
        async with aio.Consumer(config, client=client) as consumer:
            message = await asyncio.wait_for(anext(consumer.messages(topic)), TIMEOUT_S)
            assert (message.offset, message.value) == (0, b"first")
            assert calls >= 2
