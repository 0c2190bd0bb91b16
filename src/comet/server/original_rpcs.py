"""The original Comet RPCs (per-record Produce and Consume, Subscribe/Poll/Unsubscribe).

In cluster mode they work at any broker: Consume is forwarded to the
partition's leader and the group calls to the group's coordinator. Produce
at a broker that does not lead a partition answers FAILED_PRECONDITION with
the leader in the trailing metadata, including a ProduceResponse with the
original `leader_broker_id` field set (`comet-produce-response-bin`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comet.broker.errors import NotLeaderError
from comet.server.rpc_errors import NS_PER_MS, forward, handles_errors
from comet.v1 import broker_pb2 as pb

if TYPE_CHECKING:
    from comet.broker import Broker
    from comet.server.peers import PeerClients


class OriginalRpcs:
    """Mixin of BrokerServicer: the RPCs of the original API."""

    broker: Broker
    peers: PeerClients

    @handles_errors
    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        """Original Produce: per-record list, broker chooses negative partitions."""
        try:
            results = await self.broker.produce_records(
                request.topic, [(r.partition, r.key, r.value) for r in request.records]
            )
        except NotLeaderError as exc:
            legacy = pb.ProduceResponse(error=str(exc), leader_broker_id=exc.leader_id)
            exc.extra_metadata = (("comet-produce-response-bin", legacy.SerializeToString()),)
            raise
        return pb.ProduceResponse(
            results=[pb.ProduceResult(partition=p, offset=o) for p, o in results]
        )

    @handles_errors
    async def Consume(self, request: pb.ConsumeRequest, context: Any) -> pb.ConsumeResponse:
        """Original Consume: decoded records of one partition from an offset (at any broker)."""
        leader = self.broker.forward_target(request.topic, request.partition)
        if leader is not None:
            return await forward(
                context, self.peers.stub(leader).Consume(request, timeout=context.time_remaining())
            )
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
        coordinator = self.broker.group_forward_target(request.group)
        if coordinator is not None:
            return await forward(
                context,
                self.peers.stub(coordinator).Subscribe(request, timeout=context.time_remaining()),
            )
        joined = await self.broker.groups.subscribe(request.topic, request.group)
        return pb.SubscribeResponse(
            member_id=joined.member_id,
            partitions=joined.by_topic().get(request.topic, []),
            generation=joined.generation,
        )

    @handles_errors
    async def Poll(self, request: pb.PollRequest, context: Any) -> pb.PollResponse:
        """Original Poll: heartbeat, then records from the committed offsets (committed after)."""
        coordinator = self.broker.group_forward_target(request.group)
        if coordinator is not None:
            return await forward(
                context,
                self.peers.stub(coordinator).Poll(request, timeout=context.time_remaining()),
            )
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
        coordinator = self.broker.group_forward_target(request.group)
        if coordinator is not None:
            return await forward(
                context,
                self.peers.stub(coordinator).Unsubscribe(request, timeout=context.time_remaining()),
            )
        await self.broker.groups.unsubscribe(request.topic, request.group, request.member_id)
        return pb.UnsubscribeResponse(success=True)

    @handles_errors
    async def Replicate(self, request: pb.ReplicateRequest, context: Any) -> pb.ReplicateResponse:
        """Original leader-to-follower copy; kept for old callers (followers now fetch)."""
        self.broker.replicate_records(
            request.topic,
            request.partition,
            [(r.offset, r.key, r.value, r.timestamp) for r in request.records],
        )
        return pb.ReplicateResponse(success=True)
