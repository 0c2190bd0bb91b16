"""A partition the client's cached metadata shows without a leader is looked up again."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from comet import aio
from comet.cli.local_broker import LocalBroker
from comet.records import encode_batch


class OfflineInCache(aio.CometClient):
    """A client whose cached metadata shows every partition offline, as during a failover."""

    async def metadata(
        self, topics: Sequence[str] = (), *, refresh: bool = True
    ) -> aio.ClusterMetadata:
        meta = await super().metadata(topics, refresh=refresh)
        if refresh:
            return meta
        offline = {
            name: tuple(dataclasses.replace(p, leader="") for p in parts)
            for name, parts in meta.topics.items()
        }
        return dataclasses.replace(meta, topics=offline)


async def test_a_partition_cached_as_offline_is_fetched_after_a_refresh(
    broker: LocalBroker, topic: str
) -> None:
    # Found by the fault harness: a consumer fetched metadata while a partition had no
    # leader (its leader cut off from etcd) and kept failing with "has no live leader"
    # from that cached view, never asking again, so the partition was not consumed again.
    async with OfflineInCache(broker.address) as client:
        await client.create_topic(topic, 1)
        await client.produce_batch(topic, 0, encode_batch([(None, b"v")]), acks=1)
        fetched = await client.fetch(topic, 0, 0)
        assert fetched.high_watermark == 1
        assert await client.list_offsets(topic, 0) == 1
