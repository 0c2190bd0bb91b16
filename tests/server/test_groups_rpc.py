"""Consumer-group RPCs and the original Subscribe/Poll/Unsubscribe against a real broker process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from comet.cli.local_broker import LocalBroker
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

pytestmark = pytest.mark.integration

RPC_TIMEOUT = 10
SETTLE_TIMEOUT_S = 15
HEARTBEAT_INTERVAL_S = 0.02


@pytest.fixture
async def stub(broker: LocalBroker) -> AsyncIterator[broker_pb2_grpc.BrokerServiceStub]:
    async with grpc.aio.insecure_channel(broker.address) as channel:
        yield broker_pb2_grpc.BrokerServiceStub(channel)


async def create(stub: broker_pb2_grpc.BrokerServiceStub, topic: str, partitions: int) -> None:
    await stub.CreateTopic(
        pb.CreateTopicRequest(name=topic, partitions=partitions), timeout=RPC_TIMEOUT
    )


async def join(
    stub: broker_pb2_grpc.BrokerServiceStub,
    group: str,
    topics: list[str],
    member_id: str = "",
    client_id: str = "",
) -> pb.JoinGroupResponse:
    request = pb.JoinGroupRequest(
        group=group, member_id=member_id, topics=topics, client_id=client_id
    )
    return await stub.JoinGroup(request, timeout=RPC_TIMEOUT + 10)


async def member_until_settled(
    stub: broker_pb2_grpc.BrokerServiceStub,
    group: str,
    topics: list[str],
    members: int,
    reply: pb.JoinGroupResponse | None = None,
    client_id: str = "",
) -> pb.JoinGroupResponse:
    """A consumer's membership loop: (re-)join whenever the heartbeat says so, until the
    group is Stable with `members` members in this member's generation."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    if reply is None:
        reply = await join(stub, group, topics, client_id=client_id)
    while True:
        beat = await stub.Heartbeat(
            pb.HeartbeatRequest(
                group=group, member_id=reply.member_id, generation=reply.generation
            ),
            timeout=RPC_TIMEOUT,
        )
        if beat.rebalance:
            reply = await join(stub, group, topics, reply.member_id, client_id)
            continue
        described = await stub.DescribeGroup(
            pb.DescribeGroupRequest(group=group), timeout=RPC_TIMEOUT
        )
        if (
            described.state == "Stable"
            and len(described.members) == members
            and described.generation == reply.generation
        ):
            return reply
        assert time.monotonic() < deadline, f"group {group} did not settle: {described}"
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)  # the heartbeat interval, not a sync point


def owned(reply: pb.JoinGroupResponse, topic: str) -> set[int]:
    return {p for tp in reply.assignment if tp.topic == topic for p in tp.partitions}


async def expect_code(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_members_split_partitions_rebalance_and_fence_commits(stub, topic: str) -> None:
    group = f"g-{topic}"
    await create(stub, topic, 4)

    # two members join concurrently and split the topic
    a, b = await asyncio.gather(
        member_until_settled(stub, group, [topic], 2, client_id="a"),
        member_until_settled(stub, group, [topic], 2, client_id="b"),
    )
    assert a.generation == b.generation
    assert a.session_timeout_ms == 10_000
    assert owned(a, topic) | owned(b, topic) == {0, 1, 2, 3}
    assert len(owned(a, topic)) == len(owned(b, topic)) == 2
    first_generation = a.generation

    # a third member joins: the heartbeats of the others say rebalance
    joining_c = asyncio.create_task(join(stub, group, [topic], client_id="c"))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        beat = await stub.Heartbeat(
            pb.HeartbeatRequest(group=group, member_id=a.member_id, generation=a.generation),
            timeout=RPC_TIMEOUT,
        )
        if beat.rebalance:
            break
        assert time.monotonic() < deadline, "heartbeat never said rebalance"
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)
    assert beat.generation == first_generation

    # the current generation may still commit while the rebalance is prepared
    mine = sorted(owned(a, topic))
    await stub.CommitOffsets(
        pb.CommitOffsetsRequest(
            group=group,
            member_id=a.member_id,
            generation=a.generation,
            offsets=[pb.PartitionOffset(topic=topic, partition=mine[0], offset=3)],
        ),
        timeout=RPC_TIMEOUT,
    )
    a, b, c = await asyncio.gather(
        join(stub, group, [topic], a.member_id, "a"),
        join(stub, group, [topic], b.member_id, "b"),
        joining_c,
    )
    assert a.generation == b.generation == c.generation == first_generation + 1
    assert sorted(len(owned(r, topic)) for r in (a, b, c)) == [1, 1, 2]
    assert owned(a, topic) | owned(b, topic) | owned(c, topic) == {0, 1, 2, 3}

    # the old generation is fenced off
    stale = await expect_code(
        stub.CommitOffsets(
            pb.CommitOffsetsRequest(
                group=group,
                member_id=b.member_id,
                generation=first_generation,
                offsets=[pb.PartitionOffset(topic=topic, partition=0, offset=9)],
            ),
            timeout=RPC_TIMEOUT,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert f"generation {first_generation} " in stale.details()
    assert f"generation {a.generation}" in stale.details()
    assert ("comet-error", "StaleGenerationError") in tuple(stale.trailing_metadata())

    # commit and fetch with the current generation
    await stub.CommitOffsets(
        pb.CommitOffsetsRequest(
            group=group,
            member_id=c.member_id,
            generation=c.generation,
            offsets=[
                pb.PartitionOffset(topic=topic, partition=p, offset=10 + p)
                for p in sorted(owned(c, topic))
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    fetched = await stub.FetchOffsets(
        pb.FetchOffsetsRequest(
            group=group, partitions=[pb.TopicPartitions(topic=topic, partitions=[0, 1, 2, 3])]
        ),
        timeout=RPC_TIMEOUT,
    )
    expected = dict.fromkeys(range(4), -1)
    expected[mine[0]] = 3
    expected.update({p: 10 + p for p in owned(c, topic)})
    assert {o.partition: o.offset for o in fetched.offsets} == expected

    # unknown members are told to join again
    unknown = await expect_code(
        stub.Heartbeat(
            pb.HeartbeatRequest(group=group, member_id="ghost", generation=1),
            timeout=RPC_TIMEOUT,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "join again" in unknown.details()

    # leaving: the group lists its members until they are gone
    listed = {g.group: g for g in (await stub.ListGroups(pb.ListGroupsRequest())).groups}
    assert (listed[group].state, listed[group].members) == ("Stable", 3)
    for member in (a, b, c):
        await stub.LeaveGroup(
            pb.LeaveGroupRequest(group=group, member_id=member.member_id), timeout=RPC_TIMEOUT
        )
    listed = {g.group: g for g in (await stub.ListGroups(pb.ListGroupsRequest())).groups}
    assert (listed[group].state, listed[group].members) == ("Empty", 0)


async def test_join_validates_its_fields(stub, topic: str) -> None:
    bad = await expect_code(
        stub.JoinGroup(
            pb.JoinGroupRequest(group="g", topics=[topic], session_timeout_ms=10),
            timeout=RPC_TIMEOUT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad.details().startswith("session_timeout_ms")
    bad = await expect_code(
        stub.JoinGroup(pb.JoinGroupRequest(group="", topics=[topic]), timeout=RPC_TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad.details().startswith("group")


async def test_describe_group_shows_lag(stub, topic: str) -> None:
    group = f"g-{topic}"
    await create(stub, topic, 2)
    await stub.Produce(
        pb.ProduceRequest(
            topic=topic,
            records=[pb.ProduceRecord(partition=i % 2, value=b"v%d" % i) for i in range(7)],
        ),
        timeout=RPC_TIMEOUT,
    )
    member = await join(stub, group, [topic], client_id="lagger")
    await stub.CommitOffsets(
        pb.CommitOffsetsRequest(
            group=group,
            member_id=member.member_id,
            generation=member.generation,
            offsets=[pb.PartitionOffset(topic=topic, partition=0, offset=1)],
        ),
        timeout=RPC_TIMEOUT,
    )
    d = await stub.DescribeGroup(pb.DescribeGroupRequest(group=group), timeout=RPC_TIMEOUT)
    assert (d.group, d.state, d.generation) == (group, "Stable", member.generation)
    assert d.coordinator_id
    ((m),) = d.members
    assert (m.member_id, m.client_id, list(m.topics)) == (member.member_id, "lagger", [topic])
    assert {(tp.topic, tuple(tp.partitions)) for tp in m.assignment} == {(topic, (0, 1))}
    lag = {o.partition: (o.committed, o.log_end_offset, o.lag) for o in d.offsets}
    assert lag == {0: (1, 4, 3), 1: (-1, 3, 3)}
    await expect_code(
        stub.DescribeGroup(pb.DescribeGroupRequest(group=f"none-{topic}"), timeout=RPC_TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_original_subscribe_poll_unsubscribe(stub, topic: str) -> None:
    group = f"g-{topic}"
    await create(stub, topic, 2)
    await stub.Produce(
        pb.ProduceRequest(
            topic=topic,
            records=[
                pb.ProduceRecord(partition=i % 2, key=b"k%d" % i, value=b"v%d" % i)
                for i in range(10)
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    sub = await stub.Subscribe(pb.SubscribeRequest(topic=topic, group=group), timeout=RPC_TIMEOUT)
    assert sub.member_id and sub.generation >= 1
    assert sorted(sub.partitions) == [0, 1]

    polled = await stub.Poll(
        pb.PollRequest(topic=topic, group=group, member_id=sub.member_id), timeout=RPC_TIMEOUT
    )
    assert (polled.rebalance, polled.generation) == (False, sub.generation)
    by_partition: dict[int, list[tuple[int, bytes, bytes]]] = {0: [], 1: []}
    for m in polled.messages:
        assert m.topic == topic
        assert m.timestamp > 0 and m.timestamp % 1_000_000 == 0
        by_partition[m.partition].append((m.offset, m.key, m.value))
    assert by_partition == {
        p: [(j, b"k%d" % i, b"v%d" % i) for j, i in enumerate(range(p, 10, 2))] for p in (0, 1)
    }

    again = await stub.Poll(
        pb.PollRequest(topic=topic, group=group, member_id=sub.member_id, max_records=5),
        timeout=RPC_TIMEOUT,
    )
    assert list(again.messages) == []
    fetched = await stub.FetchOffsets(pb.FetchOffsetsRequest(group=group), timeout=RPC_TIMEOUT)
    assert {(o.topic, o.partition, o.offset) for o in fetched.offsets} == {
        (topic, 0, 5),
        (topic, 1, 5),
    }

    done = await stub.Unsubscribe(
        pb.UnsubscribeRequest(topic=topic, group=group, member_id=sub.member_id),
        timeout=RPC_TIMEOUT,
    )
    assert done.success is True
    await expect_code(
        stub.Poll(
            pb.PollRequest(topic=topic, group=group, member_id=sub.member_id),
            timeout=RPC_TIMEOUT,
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_offsets_survive_a_restart_and_stop_answers_pending_joins(
    tmp_path: Path, topic: str
) -> None:
    proc = LocalBroker(data_dir=tmp_path / "data", log_path=tmp_path / "broker.log")
    group = f"g-{topic}"
    try:
        proc.start()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = broker_pb2_grpc.BrokerServiceStub(channel)
            await create(stub, topic, 2)
            first = await join(stub, group, [topic])
            await stub.CommitOffsets(
                pb.CommitOffsetsRequest(
                    group=group,
                    member_id=first.member_id,
                    generation=first.generation,
                    offsets=[
                        pb.PartitionOffset(topic=topic, partition=0, offset=42),
                        pb.PartitionOffset(topic=topic, partition=1, offset=7),
                    ],
                ),
                timeout=RPC_TIMEOUT,
            )
            # a second member waits for the first to re-join, which it never does
            waiting = asyncio.create_task(join(stub, group, [topic]))
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while True:
                beat = await stub.Heartbeat(
                    pb.HeartbeatRequest(
                        group=group, member_id=first.member_id, generation=first.generation
                    ),
                    timeout=RPC_TIMEOUT,
                )
                if beat.rebalance:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            stopping = asyncio.get_running_loop().run_in_executor(None, proc.stop)
            await expect_code(waiting, grpc.StatusCode.UNAVAILABLE)
            assert await stopping == 0

        proc.start()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = broker_pb2_grpc.BrokerServiceStub(channel)
            fetched = await stub.FetchOffsets(
                pb.FetchOffsetsRequest(group=group), timeout=RPC_TIMEOUT
            )
            assert {(o.partition, o.offset) for o in fetched.offsets} == {(0, 42), (1, 7)}
            # membership is not persisted: the old member is told to join again
            await expect_code(
                stub.Heartbeat(
                    pb.HeartbeatRequest(
                        group=group, member_id=first.member_id, generation=first.generation
                    ),
                    timeout=RPC_TIMEOUT,
                ),
                grpc.StatusCode.NOT_FOUND,
            )
    finally:
        code = proc.stop()
        proc.cleanup()
    assert code == 0, proc.log_text()[-4000:]
