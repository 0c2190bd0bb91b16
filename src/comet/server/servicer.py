"""gRPC BrokerService: turns comet.v1 messages into Broker calls and back.

Every BrokerError becomes a status with the code it names; anything else is
logged and answered INTERNAL, so no request can take the broker down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from comet.broker import Broker
from comet.framing import ProduceBatchView, encode_fetch_response
from comet.server.group_rpcs import GroupRpcs
from comet.server.original_rpcs import OriginalRpcs
from comet.server.peers import PeerClients
from comet.server.replication_rpcs import ReplicationRpcs
from comet.server.rpc_errors import handles_errors
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

NS_PER_MS = 1_000_000


class BrokerServicer(
    OriginalRpcs, GroupRpcs, ReplicationRpcs, broker_pb2_grpc.BrokerServiceServicer
):
    """The comet.v1.BrokerService implementation (original and group RPCs in mixins)."""

    def __init__(self, broker: Broker, peers: PeerClients | None = None) -> None:
        self.broker = broker
        self.peers = peers or PeerClients()

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
        self, request: ProduceBatchView, context: Any
    ) -> pb.ProduceBatchResponse:
        """Append client-framed record batches to one partition (records arrive as a view)."""
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
    async def Fetch(self, request: pb.FetchRequest, context: Any) -> bytes:
        """Stored batches from an offset, with long-poll (a pre-encoded FetchResponse)."""
        partition, result = await self.broker.fetch(
            request.topic,
            request.partition,
            request.offset,
            request.max_bytes,
            request.max_wait_ms,
            request.min_bytes,
        )
        return encode_fetch_response(
            request.topic,
            request.partition,
            result.records,
            partition.high_watermark,
            partition.log.log_start_offset,
            partition.log.log_end_offset,
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
