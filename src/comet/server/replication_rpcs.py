"""Broker-to-broker replication RPCs, and producer id allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comet.broker.errors import InvalidRequestError
from comet.framing import encode_replica_fetch_response
from comet.server.rpc_errors import handles_errors
from comet.v1 import broker_pb2 as pb

if TYPE_CHECKING:
    from comet.broker import Broker


class ReplicationRpcs:
    """Mixin of BrokerServicer: ReplicaFetch, OffsetForLeaderEpoch, InitProducerId."""

    broker: Broker

    @handles_errors
    async def ReplicaFetch(self, request: pb.ReplicaFetchRequest, context: Any) -> bytes:
        """A follower pulls stored batches from its log end offset (a pre-encoded response)."""
        partition, result = await self.broker.replica_fetch(
            request.topic,
            request.partition,
            request.offset,
            request.replica_id,
            request.leader_epoch,
            request.max_bytes,
            request.max_wait_ms,
        )
        return encode_replica_fetch_response(
            result.records,
            partition.high_watermark,
            partition.log.log_start_offset,
            partition.log.log_end_offset,
            partition.leader_epoch,
        )

    @handles_errors
    async def OffsetForLeaderEpoch(
        self, request: pb.OffsetForLeaderEpochRequest, context: Any
    ) -> pb.OffsetForLeaderEpochResponse:
        """Where the leader's log ends for a leader epoch (follower truncation)."""
        epoch, end = self.broker.offset_for_leader_epoch(
            request.topic, request.partition, request.leader_epoch, request.current_leader_epoch
        )
        return pb.OffsetForLeaderEpochResponse(leader_epoch=epoch, end_offset=end)

    @handles_errors
    async def InitProducerId(
        self, request: pb.InitProducerIdRequest, context: Any
    ) -> pb.InitProducerIdResponse:
        """A new producer id for an idempotent producer."""
        if request.transactional_id:
            raise InvalidRequestError("transactional_id: transactions are not supported")
        producer_id = await self.broker.coordinator.allocate_producer_id()
        return pb.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)
