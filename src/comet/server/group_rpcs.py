"""Consumer-group RPCs; only the group's coordinator broker serves them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from comet.broker.validation import validate_group_name
from comet.server.rpc_errors import handles_errors
from comet.v1 import broker_pb2 as pb

if TYPE_CHECKING:
    from comet.broker import Broker


class GroupRpcs:
    """Mixin of BrokerServicer: JoinGroup, Heartbeat, offsets, describe, FindCoordinator."""

    broker: Broker

    @handles_errors
    async def JoinGroup(self, request: pb.JoinGroupRequest, context: Any) -> pb.JoinGroupResponse:
        """Join or re-join a group; answers when its rebalance completes."""
        self.broker.check_group_coordinator(request.group)
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
        self.broker.check_group_coordinator(request.group)
        beat = self.broker.groups.heartbeat(request.group, request.member_id, request.generation)
        return pb.HeartbeatResponse(rebalance=beat.rebalance, generation=beat.generation)

    @handles_errors
    async def LeaveGroup(
        self, request: pb.LeaveGroupRequest, context: Any
    ) -> pb.LeaveGroupResponse:
        """Leave a group now."""
        self.broker.check_group_coordinator(request.group)
        self.broker.groups.leave(request.group, request.member_id)
        return pb.LeaveGroupResponse()

    @handles_errors
    async def CommitOffsets(
        self, request: pb.CommitOffsetsRequest, context: Any
    ) -> pb.CommitOffsetsResponse:
        """Commit offsets, fenced by member and generation."""
        self.broker.check_group_coordinator(request.group)
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
        self.broker.check_group_coordinator(request.group)
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
        self.broker.check_group_coordinator(request.group)
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
    async def FindCoordinator(
        self, request: pb.FindCoordinatorRequest, context: Any
    ) -> pb.FindCoordinatorResponse:
        """Which broker coordinates a group."""
        validate_group_name(request.group)
        owner = self.broker.coordinator_for(request.group)
        return pb.FindCoordinatorResponse(
            broker_id=owner, address=self.broker.broker_address(owner) or ""
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


def _topic_partitions(assignment: Iterable[tuple[str, int]]) -> list[pb.TopicPartitions]:
    """(topic, partition) pairs as TopicPartitions, topics and partitions sorted."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(assignment):
        by_topic.setdefault(topic, []).append(partition)
    return [pb.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()]
