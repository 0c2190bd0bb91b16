"""CometClient: the asyncio connection to a Comet cluster, with admin and data primitives.

Admin calls go to any reachable bootstrap broker (rotating past dead ones);
produce and fetch go to the partition's leader found in metadata. The
producer and consumer are built on these primitives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal, TypeVar

import grpc

from comet.aio.addresses import host_of, parse_addresses, resolve_advertised
from comet.aio.types import (
    BrokerInfo,
    ClusterMetadata,
    FetchResult,
    PartitionInfo,
    ProduceResult,
    TopicDescription,
    TopicInfo,
)
from comet.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    CometError,
    NotCoordinatorError,
    NotLeaderError,
    RequestTimeoutError,
    TopicAlreadyExistsError,
    TopicNotFoundError,
    from_rpc_error,
)
from comet.framing import (
    FetchView,
    decode_fetch_response,
    encode_produce_batch_request,
    serialize,
)
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

T = TypeVar("T")
Acks = Literal[0, 1, -1, "all"]

DEFAULT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
EARLIEST = -2
LATEST = -1
# A broker that was unreachable is dialled again within a second of coming back, as
# Kafka clients do (reconnect.backoff.max.ms=1000): gRPC's default backoff grows to two
# minutes, and producers failed records for 20 s after a 7 s partition had healed
# (found by the fault harness, tests/faults).
MAX_RECONNECT_BACKOFF_MS = 1000
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
]


class BrokerStub(broker_pb2_grpc.BrokerServiceStub):
    """The generated stub, with ProduceBatch and Fetch framed by comet.framing.

    ProduceBatch takes a request already serialized around the records
    (or a generated message), and Fetch answers a FetchView whose records are a view of the received
    bytes: the record bytes are copied once per produce, not at all per fetch.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(channel)
        self.ProduceBatch = channel.unary_unary(
            "/comet.v1.BrokerService/ProduceBatch",
            request_serializer=serialize,
            response_deserializer=pb.ProduceBatchResponse.FromString,
        )
        self.Fetch = channel.unary_unary(
            "/comet.v1.BrokerService/Fetch",
            request_serializer=pb.FetchRequest.SerializeToString,
            response_deserializer=decode_fetch_response,
        )


def acks_value(acks: Acks | str) -> int:
    """Map 0, 1, "all" or -1 to the wire value; ValueError otherwise."""
    if acks == "all" or acks == -1:
        return -1
    if acks in (0, 1):
        return int(acks)
    raise ValueError(f"acks: must be 0, 1 or 'all', not {acks!r}")


class CometClient:
    """Connections to a cluster's brokers; safe to share between tasks of one loop."""

    def __init__(self, bootstrap: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S):
        self.bootstrap = parse_addresses(bootstrap)
        self.timeout = timeout
        self._stubs: dict[str, broker_pb2_grpc.BrokerServiceStub] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._next_bootstrap = 0
        self._metadata: ClusterMetadata | None = None
        self._coordinators: dict[str, str] = {}
        self._closed = False

    async def __aenter__(self) -> CometClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel; idempotent."""
        self._closed = True
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for channel in channels.values():
            await channel.close()

    # --- connections ---------------------------------------------------------

    def stub(self, address: str) -> BrokerStub:
        """The stub for one broker address, creating its channel on first use."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = BrokerStub(channel)
        return stub

    async def call_any(
        self, call: Callable[[broker_pb2_grpc.BrokerServiceStub], Awaitable[T]]
    ) -> T:
        """Run `call` on a bootstrap broker, moving to the next one while they are unreachable."""
        errors = []
        n = len(self.bootstrap)
        for i in range(n):
            address = self.bootstrap[(self._next_bootstrap + i) % n]
            try:
                result = await call(self.stub(address))
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, address)
                # A broker that is down, or hung (paused, overloaded): try the next one.
                if not isinstance(error, BrokerUnavailableError | RequestTimeoutError):
                    raise error from None
                errors.append(str(error))
                continue
            self._next_bootstrap = (self._next_bootstrap + i) % n
            return result
        self._next_bootstrap = (self._next_bootstrap + 1) % n
        raise BrokerUnavailableError("no bootstrap broker reachable: " + "; ".join(errors))

    async def call_address(
        self, address: str, call: Callable[[broker_pb2_grpc.BrokerServiceStub], Awaitable[T]]
    ) -> T:
        """Run `call` on one broker, mapping failures to CometError."""
        try:
            return await call(self.stub(address))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, address) from None

    # --- metadata ------------------------------------------------------------

    async def metadata(
        self, topics: Sequence[str] = (), *, refresh: bool = True
    ) -> ClusterMetadata:
        """Brokers and partition placement (all topics when `topics` is empty)."""
        cached = self._metadata
        if not refresh and cached is not None and all(t in cached.topics for t in topics):
            return cached
        response: pb.GetMetadataResponse = await self.call_any(
            lambda s: s.GetMetadata(
                pb.GetMetadataRequest(topics=list(topics)), timeout=self.timeout
            )
        )
        bootstrap_host = host_of(self.bootstrap[self._next_bootstrap])
        meta = ClusterMetadata(
            brokers=tuple(
                BrokerInfo(b.id, resolve_advertised(b.address, bootstrap_host))
                for b in response.brokers
            ),
            topics={
                t.name: tuple(
                    PartitionInfo(
                        p.id,
                        p.leader_broker_id,
                        tuple(p.replica_broker_ids),
                        tuple(p.isr_broker_ids),
                        p.leader_epoch,
                    )
                    for p in t.partitions
                )
                for t in response.topics
            },
            controller_id=response.controller_id,
            cluster_id=response.cluster_id,
        )
        if self._metadata is not None and topics:
            merged = dict(self._metadata.topics)
            merged.update(meta.topics)
            meta = ClusterMetadata(meta.brokers, merged, meta.controller_id, meta.cluster_id)
        self._metadata = meta
        return meta

    async def leader_address(self, topic: str, partition: int, *, refresh: bool = False) -> str:
        """Address of the broker leading topic/partition, from cached or fresh metadata."""
        meta = await self.metadata([topic], refresh=refresh)
        parts = meta.topics.get(topic)
        if parts is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        for info in parts:
            if info.id == partition:
                address = meta.broker_address(info.leader)
                if address is None:
                    raise BrokerUnavailableError(f"{topic}/{partition} has no live leader")
                return address
        raise TopicNotFoundError(
            f"partition: topic {topic!r} has partitions 0..{len(parts) - 1}, not {partition}"
        )

    async def _call_leader(
        self,
        topic: str,
        partition: int,
        call: Callable[[broker_pb2_grpc.BrokerServiceStub], Awaitable[T]],
    ) -> T:
        """Call the leader; after a not-leader or unreachable answer, refresh metadata once.

        A partition the cached metadata shows without a live leader is looked up
        again too: the cache may predate the election that gave it one.
        """
        try:
            address = await self.leader_address(topic, partition)
            return await self.call_address(address, call)
        except (NotLeaderError, BrokerUnavailableError):
            address = await self.leader_address(topic, partition, refresh=True)
            return await self.call_address(address, call)

    # --- admin ---------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        exist_ok: bool = False,
    ) -> bool:
        """Create a topic; True if created, False if it existed and exist_ok is set."""
        request = pb.CreateTopicRequest(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        try:
            await self.call_any(lambda s: s.CreateTopic(request, timeout=self.timeout))
        except TopicAlreadyExistsError:
            if exist_ok:
                return False
            raise
        return True

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        request = pb.DeleteTopicRequest(name=name)
        await self.call_any(lambda s: s.DeleteTopic(request, timeout=self.timeout))
        if self._metadata is not None and name in self._metadata.topics:
            self._metadata = None

    async def list_topics(self) -> list[TopicInfo]:
        """Every topic, sorted by name."""
        response: pb.ListTopicsResponse = await self.call_any(
            lambda s: s.ListTopics(pb.ListTopicsRequest(), timeout=self.timeout)
        )
        return [TopicInfo(t.name, t.partitions, t.replication_factor) for t in response.topics]

    async def describe_topic(self, name: str) -> TopicDescription:
        """Effective configuration and per-partition figures of a topic."""
        r: pb.DescribeTopicResponse = await self.call_any(
            lambda s: s.DescribeTopic(pb.DescribeTopicRequest(name=name), timeout=self.timeout)
        )
        return TopicDescription(
            r.name,
            r.replication_factor,
            dict(r.config),
            tuple(
                PartitionInfo(
                    p.id,
                    p.leader_broker_id,
                    tuple(p.replica_broker_ids),
                    tuple(p.isr_broker_ids),
                    p.leader_epoch,
                    p.log_start_offset,
                    p.log_end_offset,
                    p.high_watermark,
                    p.size_bytes,
                    p.segment_count,
                )
                for p in r.partitions
            ),
        )

    # --- data ----------------------------------------------------------------

    async def init_producer_id(self) -> tuple[int, int]:
        """A new (producer id, producer epoch) for an idempotent producer, from any broker."""
        r: pb.InitProducerIdResponse = await self.call_any(
            lambda s: s.InitProducerId(pb.InitProducerIdRequest(), timeout=self.timeout)
        )
        return r.producer_id, r.producer_epoch

    async def produce_batch(
        self,
        topic: str,
        partition: int,
        records: bytes,
        *,
        acks: Acks = "all",
        timeout_ms: int = 0,
    ) -> ProduceResult:
        """Send framed RecordBatch v2 bytes to the partition leader."""
        request = encode_produce_batch_request(
            topic, partition, records, acks_value(acks), timeout_ms
        )
        deadline = max(self.timeout, timeout_ms / 1000 + 1)
        r: pb.ProduceBatchResponse = await self._call_leader(
            topic, partition, lambda s: s.ProduceBatch(request, timeout=deadline)
        )
        return ProduceResult(topic, partition, r.base_offset, r.last_offset, r.log_start_offset)

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1024 * 1024,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
    ) -> FetchResult:
        """Raw batches from `offset` (the first may start earlier), waiting up to max_wait_ms."""
        request = pb.FetchRequest(
            topic=topic,
            partition=partition,
            offset=offset,
            max_bytes=max_bytes,
            max_wait_ms=max_wait_ms,
            min_bytes=min_bytes,
        )
        deadline = self.timeout + max_wait_ms / 1000
        r: FetchView = await self._call_leader(
            topic, partition, lambda s: s.Fetch(request, timeout=deadline)
        )
        return FetchResult(
            topic, partition, r.records, r.high_watermark, r.log_start_offset, r.log_end_offset
        )

    # --- consumer groups ------------------------------------------------------

    async def coordinator_address(self, group: str, *, refresh: bool = False) -> str:
        """Address of the broker coordinating `group` (asked of any broker, then cached)."""
        cached = self._coordinators.get(group)
        if cached is not None and not refresh:
            return cached
        request = pb.FindCoordinatorRequest(group=group)
        reply: pb.FindCoordinatorResponse = await self.call_any(
            lambda s: s.FindCoordinator(request, timeout=self.timeout)
        )
        bootstrap_host = host_of(self.bootstrap[self._next_bootstrap])
        address = resolve_advertised(reply.address, bootstrap_host)
        self._coordinators[group] = address
        return address

    async def _call_group(
        self, group: str, call: Callable[[broker_pb2_grpc.BrokerServiceStub], Awaitable[T]]
    ) -> T:
        """Call the group's coordinator; after "not coordinator" or no answer, find it again."""
        address = await self.coordinator_address(group)
        try:
            return await self.call_address(address, call)
        except (NotCoordinatorError, BrokerUnavailableError):
            address = await self.coordinator_address(group, refresh=True)
            return await self.call_address(address, call)

    async def join_group(
        self,
        group: str,
        member_id: str,
        topics: Sequence[str],
        *,
        session_timeout_ms: int = 0,
        rebalance_timeout_ms: int = 0,
        client_id: str = "",
    ) -> pb.JoinGroupResponse:
        """Join (or re-join) a group; returns once the group's rebalance completes."""
        request = pb.JoinGroupRequest(
            group=group,
            member_id=member_id,
            topics=list(topics),
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            client_id=client_id,
        )
        wait = max(session_timeout_ms, rebalance_timeout_ms, 10_000) / 1000
        return await self._call_group(
            group, lambda s: s.JoinGroup(request, timeout=self.timeout + wait)
        )

    async def heartbeat(self, group: str, member_id: str, generation: int) -> pb.HeartbeatResponse:
        """Keep a membership alive; `.rebalance` says when to re-join."""
        request = pb.HeartbeatRequest(group=group, member_id=member_id, generation=generation)
        return await self._call_group(group, lambda s: s.Heartbeat(request, timeout=self.timeout))

    async def leave_group(self, group: str, member_id: str) -> None:
        """Leave a group now (its partitions move to the other members)."""
        request = pb.LeaveGroupRequest(group=group, member_id=member_id)
        await self._call_group(group, lambda s: s.LeaveGroup(request, timeout=self.timeout))

    async def commit_offsets(
        self,
        group: str,
        offsets: Mapping[tuple[str, int], int],
        *,
        member_id: str = "",
        generation: int = -1,
    ) -> None:
        """Commit next-offsets-to-consume; refused from a stale generation."""
        request = pb.CommitOffsetsRequest(
            group=group,
            member_id=member_id,
            generation=generation,
            offsets=[
                pb.PartitionOffset(topic=t, partition=p, offset=o)
                for (t, p), o in sorted(offsets.items())
            ],
        )
        await self._call_group(group, lambda s: s.CommitOffsets(request, timeout=self.timeout))

    async def fetch_offsets(
        self, group: str, partitions: Mapping[str, Sequence[int]] | None = None
    ) -> dict[tuple[str, int], int]:
        """Committed offsets of a group (-1 where none), for `partitions` or all."""
        request = pb.FetchOffsetsRequest(
            group=group,
            partitions=[
                pb.TopicPartitions(topic=t, partitions=list(ps))
                for t, ps in (partitions or {}).items()
            ],
        )
        r: pb.FetchOffsetsResponse = await self._call_group(
            group, lambda s: s.FetchOffsets(request, timeout=self.timeout)
        )
        return {(o.topic, o.partition): o.offset for o in r.offsets}

    async def describe_group(self, group: str) -> pb.DescribeGroupResponse:
        """State, generation, members, assignment and lag of a group."""
        request = pb.DescribeGroupRequest(group=group)
        return await self._call_group(
            group, lambda s: s.DescribeGroup(request, timeout=self.timeout)
        )

    async def list_groups(self) -> list[pb.GroupSummary]:
        """Every group the cluster knows."""
        r: pb.ListGroupsResponse = await self.call_any(
            lambda s: s.ListGroups(pb.ListGroupsRequest(), timeout=self.timeout)
        )
        return list(r.groups)

    async def list_offsets(self, topic: str, partition: int, timestamp_ms: int = LATEST) -> int:
        """LATEST (-1), EARLIEST (-2), or the first offset at or after a ms timestamp (-1: none)."""
        request = pb.ListOffsetsRequest(topic=topic, partition=partition, timestamp_ms=timestamp_ms)
        r: pb.ListOffsetsResponse = await self._call_leader(
            topic, partition, lambda s: s.ListOffsets(request, timeout=self.timeout)
        )
        return r.offset


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    backoff: float = 0.05,
    max_backoff: float = 5.0,
) -> T:
    """Run `call`, retrying retriable CometErrors with doubling backoff."""
    delay = backoff
    for attempt in range(attempts):
        try:
            return await call()
        except CometError as exc:
            if not exc.retriable or attempt == attempts - 1:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff)
    raise AssertionError("unreachable")
