"""gRPC BrokerService: turns comet.v1 messages into Broker calls and back.

Every BrokerError becomes a status with the code it names; anything else is
logged and answered INTERNAL, so no request can take the broker down.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import structlog

from comet.broker import Broker
from comet.broker.errors import BrokerError, NotLeaderError, UnimplementedError
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

NS_PER_MS = 1_000_000


def handles_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map BrokerError to its status code and unexpected errors to INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except BrokerError as exc:
            metadata: tuple[tuple[str, str], ...] = (("comet-error", type(exc).__name__),)
            if isinstance(exc, NotLeaderError) and exc.leader_id:
                metadata += (
                    ("comet-leader-id", exc.leader_id),
                    ("comet-leader-address", exc.leader_address),
                )
            context.set_trailing_metadata(metadata)
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("rpc.internal_error", rpc=method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error")
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


class BrokerServicer(broker_pb2_grpc.BrokerServiceServicer):
    """The comet.v1.BrokerService implementation."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    # --- admin -------------------------------------------------------------

    @handles_errors
    async def CreateTopic(
        self, request: pb.CreateTopicRequest, context: Any
    ) -> pb.CreateTopicResponse:
        """Create a topic."""
        await self.broker.create_topic(
            request.name, request.partitions, request.replication_factor, dict(request.config)
        )
        return pb.CreateTopicResponse(success=True)

    @handles_errors
    async def DeleteTopic(
        self, request: pb.DeleteTopicRequest, context: Any
    ) -> pb.DeleteTopicResponse:
        """Delete a topic and its data."""
        await self.broker.delete_topic(request.name)
        return pb.DeleteTopicResponse(success=True)

    @handles_errors
    async def ListTopics(
        self, request: pb.ListTopicsRequest, context: Any
    ) -> pb.ListTopicsResponse:
        """List topics."""
        topics = await self.broker.list_topics()
        return pb.ListTopicsResponse(
            topics=[
                pb.TopicInfo(
                    name=t.name, partitions=t.partitions, replication_factor=t.replication_factor
                )
                for t in topics
            ]
        )

    @handles_errors
    async def GetMetadata(
        self, request: pb.GetMetadataRequest, context: Any
    ) -> pb.GetMetadataResponse:
        """Brokers, topics and partition leaders."""
        brokers, topics = await self.broker.metadata(list(request.topics))
        controller = await self.broker.coordinator.controller_id()
        return pb.GetMetadataResponse(
            brokers=[pb.BrokerInfo(id=b.id, address=b.address) for b in brokers],
            topics=[
                pb.TopicMetadata(
                    name=spec.name,
                    replication_factor=spec.replication_factor,
                    partitions=[
                        pb.PartitionMetadata(
                            id=s.partition,
                            leader_broker_id=s.leader,
                            replica_broker_ids=s.replicas,
                            isr_broker_ids=s.isr,
                            leader_epoch=s.leader_epoch,
                        )
                        for s in states
                    ],
                )
                for spec, states in topics
            ],
            controller_id=controller or "",
            cluster_id=getattr(self.broker.coordinator, "cluster_id", ""),
        )

    @handles_errors
    async def DescribeTopic(
        self, request: pb.DescribeTopicRequest, context: Any
    ) -> pb.DescribeTopicResponse:
        """A topic's effective configuration and per-partition log state."""
        desc = await self.broker.describe_topic(request.name)
        parts = []
        for state, partition in desc.partitions:
            item = pb.PartitionDescription(
                id=state.partition,
                leader_broker_id=state.leader,
                replica_broker_ids=state.replicas,
                isr_broker_ids=state.isr,
                leader_epoch=state.leader_epoch,
            )
            if partition is not None:
                plog = partition.log
                item.log_start_offset = plog.log_start_offset
                item.log_end_offset = plog.log_end_offset
                item.high_watermark = partition.high_watermark
                item.size_bytes = plog.size_bytes
                item.segment_count = plog.segment_count
            parts.append(item)
        return pb.DescribeTopicResponse(
            name=desc.spec.name,
            replication_factor=desc.spec.replication_factor,
            config=desc.config,
            partitions=parts,
        )

    # --- batch data path -----------------------------------------------------

    @handles_errors
    async def ProduceBatch(
        self, request: pb.ProduceBatchRequest, context: Any
    ) -> pb.ProduceBatchResponse:
        """Append client-framed record batches to one partition."""
        info = await self.broker.produce_batch(
            request.topic, request.partition, request.records, request.acks, request.timeout_ms
        )
        partition = self.broker.partition(request.topic, request.partition)
        if request.acks == 0:
            return pb.ProduceBatchResponse(
                topic=request.topic, partition=request.partition, base_offset=-1, last_offset=-1
            )
        return pb.ProduceBatchResponse(
            topic=request.topic,
            partition=request.partition,
            base_offset=info.base_offset,
            last_offset=info.last_offset,
            log_start_offset=partition.log.log_start_offset,
            record_count=info.record_count,
        )

    @handles_errors
    async def Fetch(self, request: pb.FetchRequest, context: Any) -> pb.FetchResponse:
        """Stored batches from an offset, with long-poll."""
        partition, result = await self.broker.fetch(
            request.topic,
            request.partition,
            request.offset,
            request.max_bytes,
            request.max_wait_ms,
            request.min_bytes,
        )
        return pb.FetchResponse(
            topic=request.topic,
            partition=request.partition,
            records=result.records,
            high_watermark=partition.high_watermark,
            log_start_offset=partition.log.log_start_offset,
            log_end_offset=partition.log.log_end_offset,
        )

    @handles_errors
    async def ListOffsets(
        self, request: pb.ListOffsetsRequest, context: Any
    ) -> pb.ListOffsetsResponse:
        """Earliest, latest or by-timestamp offset of a partition."""
        offset, ts = await self.broker.list_offsets(
            request.topic, request.partition, request.timestamp_ms
        )
        return pb.ListOffsetsResponse(
            topic=request.topic, partition=request.partition, offset=offset, timestamp_ms=ts
        )

    # --- the original per-record API ----------------------------------------

    @handles_errors
    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        """Original Produce: per-record list, broker chooses negative partitions."""
        results = await self.broker.produce_records(
            request.topic, [(r.partition, r.key, r.value) for r in request.records]
        )
        return pb.ProduceResponse(
            results=[pb.ProduceResult(partition=p, offset=o) for p, o in results]
        )

    @handles_errors
    async def Consume(self, request: pb.ConsumeRequest, context: Any) -> pb.ConsumeResponse:
        """Original Consume: decoded records of one partition from an offset."""
        records = await self.broker.consume(
            request.topic, request.partition, request.offset, request.max_records
        )
        topic, partition = request.topic, request.partition
        return pb.ConsumeResponse(
            messages=[
                pb.Message(
                    offset=r.offset,
                    key=r.key or b"",
                    value=r.value or b"",
                    timestamp=r.timestamp_ms * NS_PER_MS,
                    partition=partition,
                    topic=topic,
                )
                for r in records
            ]
        )

    @handles_errors
    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> pb.SubscribeResponse:
        """Original Subscribe: join `group` as a new member consuming `topic`."""
        joined = await self.broker.groups.subscribe(request.topic, request.group)
        return pb.SubscribeResponse(
            member_id=joined.member_id,
            partitions=joined.by_topic().get(request.topic, []),
            generation=joined.generation,
        )

    @handles_errors
    async def Poll(self, request: pb.PollRequest, context: Any) -> pb.PollResponse:
        """Original Poll: heartbeat, then records from the committed offsets (committed after)."""
        polled = await self.broker.groups.poll(
            request.topic, request.group, request.member_id, request.max_records
        )
        return pb.PollResponse(
            messages=[
                pb.Message(
                    offset=r.record.offset,
                    key=r.record.key or b"",
                    value=r.record.value or b"",
                    timestamp=r.record.timestamp_ms * NS_PER_MS,
                    partition=r.partition,
                    topic=r.topic,
                )
                for r in polled.records
            ],
            rebalance=polled.rebalance,
            generation=polled.generation,
        )

    @handles_errors
    async def Unsubscribe(
        self, request: pb.UnsubscribeRequest, context: Any
    ) -> pb.UnsubscribeResponse:
        """Original Unsubscribe: the member leaves its group."""
        await self.broker.groups.unsubscribe(request.topic, request.group, request.member_id)
        return pb.UnsubscribeResponse(success=True)

    # --- consumer groups -------------------------------------------------------

    @handles_errors
    async def JoinGroup(self, request: pb.JoinGroupRequest, context: Any) -> pb.JoinGroupResponse:
        """Join or re-join a group; answers when its rebalance completes."""
        joined = await self.broker.groups.join(
            request.group,
            request.member_id,
            list(request.topics),
            request.session_timeout_ms,
            request.client_id,
            request.rebalance_timeout_ms,
        )
        return pb.JoinGroupResponse(
            member_id=joined.member_id,
            generation=joined.generation,
            assignment=[
                pb.TopicPartitions(topic=t, partitions=ps) for t, ps in joined.by_topic().items()
            ],
            session_timeout_ms=joined.session_timeout_ms,
        )

    @handles_errors
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        """Keep a membership alive; rebalance=true means re-join."""
        beat = self.broker.groups.heartbeat(request.group, request.member_id, request.generation)
        return pb.HeartbeatResponse(rebalance=beat.rebalance, generation=beat.generation)

    @handles_errors
    async def LeaveGroup(
        self, request: pb.LeaveGroupRequest, context: Any
    ) -> pb.LeaveGroupResponse:
        """Leave a group now."""
        self.broker.groups.leave(request.group, request.member_id)
        return pb.LeaveGroupResponse()

    @handles_errors
    async def CommitOffsets(
        self, request: pb.CommitOffsetsRequest, context: Any
    ) -> pb.CommitOffsetsResponse:
        """Commit offsets, fenced by member and generation."""
        await self.broker.groups.commit_offsets(
            request.group,
            request.member_id,
            request.generation,
            {(o.topic, o.partition): o.offset for o in request.offsets},
        )
        return pb.CommitOffsetsResponse()

    @handles_errors
    async def FetchOffsets(
        self, request: pb.FetchOffsetsRequest, context: Any
    ) -> pb.FetchOffsetsResponse:
        """Committed offsets (-1 = none) of some partitions, or all committed ones."""
        wanted: dict[str, list[int]] = {}
        for tp in request.partitions:
            wanted.setdefault(tp.topic, []).extend(tp.partitions)
        offsets = await self.broker.groups.fetch_offsets(request.group, wanted)
        return pb.FetchOffsetsResponse(
            offsets=[
                pb.PartitionOffset(topic=t, partition=p, offset=o)
                for (t, p), o in sorted(offsets.items())
            ]
        )

    @handles_errors
    async def DescribeGroup(
        self, request: pb.DescribeGroupRequest, context: Any
    ) -> pb.DescribeGroupResponse:
        """State, generation, members with assignment, and lag per partition."""
        d = await self.broker.groups.describe(request.group)
        return pb.DescribeGroupResponse(
            group=d.group,
            state=d.state.value,
            generation=d.generation,
            members=[
                pb.GroupMember(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    topics=m.topics,
                    assignment=_topic_partitions(m.assignment),
                )
                for m in d.members
            ],
            offsets=[
                pb.PartitionLag(
                    topic=o.topic,
                    partition=o.partition,
                    committed=o.committed,
                    log_end_offset=o.log_end_offset,
                    lag=o.lag,
                )
                for o in d.offsets
            ],
            coordinator_id=self.broker.groups.coordinator_id,
        )

    @handles_errors
    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: Any
    ) -> pb.ListGroupsResponse:
        """Groups with members or committed offsets."""
        groups = await self.broker.groups.list_groups()
        return pb.ListGroupsResponse(
            groups=[
                pb.GroupSummary(
                    group=g.group, state=g.state.value, generation=g.generation, members=g.members
                )
                for g in groups
            ]
        )

    @handles_errors
    async def Replicate(self, request: pb.ReplicateRequest, context: Any) -> pb.ReplicateResponse:
        """Replication arrives with cluster mode."""
        raise UnimplementedError("Replicate: replication is not available in single-broker mode")


def _topic_partitions(assignment: Iterable[tuple[str, int]]) -> list[pb.TopicPartitions]:
    """(topic, partition) pairs as TopicPartitions, topics and partitions sorted."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(assignment):
        by_topic.setdefault(topic, []).append(partition)
    return [pb.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]
