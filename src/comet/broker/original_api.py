"""The original Comet per-record API on the broker: Produce, Consume, Replicate, group reads.

These calls carry single records, so unlike the batch path they encode and
decode records here. A mixin of Broker; it uses the Broker's partition
lookup and leadership view.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from comet.broker.config import DEFAULT_FETCH_MAX_BYTES, BrokerConfig
from comet.broker.errors import (
    InvalidRequestError,
    NotLeaderError,
    PartitionNotFoundError,
    TopicNotFoundError,
)
from comet.broker.partition import ACKS_LEADER, Partition
from comet.broker.validation import validate_topic_name
from comet.cluster import TopicSpec
from comet.records import (
    Record,
    RecordBatchBuilder,
    decode_batches,
    encode_batch,
    stamp_batch,
    validate_batches,
)

if TYPE_CHECKING:
    from comet.broker.broker import RemoteReader

DEFAULT_CONSUME_RECORDS = 100
MAX_CONSUME_RECORDS = 10_000


class OriginalApi:
    """Mixin of Broker: the per-record calls of the original API."""

    config: BrokerConfig
    remote: RemoteReader | None
    _topics: dict[str, TopicSpec]
    _partitions: dict[tuple[str, int], Partition]
    _round_robin: dict[str, itertools.count[int]]

    def partition(self, topic: str, index: int) -> Partition: ...
    def not_leader(self, topic: str, index: int) -> NotLeaderError: ...
    def leader_address(self, topic: str, index: int) -> tuple[str, str] | None: ...
    def _check_running(self) -> None: ...

    async def produce_records(
        self, topic: str, records: Sequence[tuple[int, bytes, bytes]]
    ) -> list[tuple[int, int]]:
        """Original Produce: (partition or negative, key, value) -> (partition, offset) each.

        A negative partition lets the broker choose: CRC-32 (IEEE) of the key
        modulo the partition count, round-robin for an empty key. Records for
        one partition become one batch; every record is checked before
        anything is written.
        """
        self._check_running()
        validate_topic_name(topic, "topic")
        spec = self._topics.get(topic)
        if spec is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        if not records:
            raise InvalidRequestError("records: at least one record is required")
        chosen: list[int] = []
        for i, (part, key, _value) in enumerate(records):
            if part < 0:
                part = self._choose_partition(topic, spec.partitions, key)
            elif part >= spec.partitions:
                raise PartitionNotFoundError(
                    f"records[{i}].partition: topic {topic!r} has partitions "
                    f"0..{spec.partitions - 1}, not {part}"
                )
            chosen.append(part)
        by_partition: dict[int, list[int]] = {}
        for i, part in enumerate(chosen):
            by_partition.setdefault(part, []).append(i)
        now_ms = int(time.time() * 1000)
        offsets = [0] * len(records)
        timeout = self.config.produce_timeout_ms / 1000
        for part, indexes in by_partition.items():
            batch = encode_batch(
                ((records[i][1] or None, records[i][2]) for i in indexes), timestamp_ms=now_ms
            )
            info = await self.partition(topic, part).produce(batch, ACKS_LEADER, timeout)
            for delta, i in enumerate(indexes):
                offsets[i] = info.base_offset + delta
        return list(zip(chosen, offsets, strict=True))

    def _choose_partition(self, topic: str, partitions: int, key: bytes) -> int:
        if key:
            return zlib.crc32(key) % partitions
        return next(self._round_robin[topic]) % partitions

    async def consume(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        """Original Consume: up to max_records decoded records from `offset` (leader only)."""
        self._check_running()
        if max_records < 0:
            raise InvalidRequestError(f"max_records: must be >= 0, got {max_records}")
        limit = min(max_records or DEFAULT_CONSUME_RECORDS, MAX_CONSUME_RECORDS)
        return self._read_local(topic, partition, offset, limit)

    def _read_local(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        target = self.partition(topic, partition)
        out: list[Record] = []
        position = offset
        while len(out) < max_records:
            # The first read also checks `offset` against the log (OUT_OF_RANGE).
            result = target.read(position, DEFAULT_FETCH_MAX_BYTES)
            before = len(out)
            for record in decode_batches(result.records, position):
                out.append(record)
                if len(out) == max_records:
                    break
            if len(out) == before:
                break
            position = out[-1].offset + 1
        return out

    async def read_records(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        """Up to max_records records from `offset` below the HW, read here or at the leader."""
        if self._leads(topic, partition) or self.remote is None:
            return self._read_local(topic, partition, offset, max_records)
        leader = self.leader_address(topic, partition)
        if leader is None or not leader[1]:
            raise self.not_leader(topic, partition)
        return await self.remote.read_records(leader[1], topic, partition, offset, max_records)

    async def log_range(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of a partition, asked of its leader if needed."""
        if self._leads(topic, partition) or self.remote is None:
            target = self.partition(topic, partition)
            return target.log.log_start_offset, target.high_watermark
        leader = self.leader_address(topic, partition)
        if leader is None or not leader[1]:
            raise self.not_leader(topic, partition)
        return await self.remote.log_range(leader[1], topic, partition)

    def replicate_records(
        self, topic: str, partition: int, records: Sequence[tuple[int, bytes, bytes, int]]
    ) -> int:
        """Original Replicate: write (offset, key, value, timestamp ns) at a follower replica.

        Kept for old callers; followers replicate by fetching. Records below
        the replica's log end are skipped (already there), the rest must
        continue it without a gap; returns the new log end offset.
        """
        self._check_running()
        validate_topic_name(topic, "topic")
        if not records:
            raise InvalidRequestError("records: at least one record is required")
        if topic not in self._topics:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        hosted = self._partitions.get((topic, partition))
        if hosted is None:
            raise NotLeaderError(f"{topic}/{partition} has no replica on broker {self.me.id}")
        if hosted.is_leader:
            raise NotLeaderError(
                f"{topic}/{partition} is led by this broker ({self.me.id}); "
                "Replicate writes only to followers"
            )
        log_end = hosted.log.log_end_offset
        fresh = [r for r in records if r[0] >= log_end]
        for i, (offset, *_rest) in enumerate(fresh):
            if offset != log_end + i:
                raise InvalidRequestError(
                    f"records[{i}].offset: {offset} leaves a gap after the replica's log end "
                    f"{log_end}; records must continue it"
                )
        if fresh:
            builder = RecordBatchBuilder(max_bytes=1 << 30)
            for _offset, key, value, ts_ns in fresh:
                builder.append(key or None, value, ts_ns // 1_000_000)
            batch = bytearray(builder.build())
            stamp_batch(batch, 0, log_end, hosted.leader_epoch)
            hosted.log.append_stamped(batch, validate_batches(batch, producer=False))
        return hosted.log.log_end_offset
