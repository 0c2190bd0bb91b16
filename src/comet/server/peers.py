"""Calls from this broker to other brokers: forwarding original RPCs and remote reads.

One grpc.aio channel per peer address, created on first use and closed with
the server. Errors of a forwarded call are passed back to the caller as they
came (status code and trailing metadata), so a client sees the same answer
it would have had from the peer.
"""

from __future__ import annotations

from typing import Any

import grpc

from comet.broker.errors import BrokerUnavailableError
from comet.records import Record
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

NS_PER_MS = 1_000_000
PEER_CALL_TIMEOUT_S = 30.0
# A peer that was unreachable (crashed, partitioned) is dialled again within a second
# of coming back: gRPC's default reconnect backoff grows to two minutes, which kept
# followers from fetching, and so acks=all waiting, for up to 12 s after a 5 s
# partition healed (found by the fault harness, tests/faults).
MAX_RECONNECT_BACKOFF_MS = 1000
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
]


class PeerClients:
    """Stubs for the other brokers of the cluster, by address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, broker_pb2_grpc.BrokerServiceStub] = {}

    def stub(self, address: str) -> broker_pb2_grpc.BrokerServiceStub:
        """The stub of the broker at `address`."""
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = broker_pb2_grpc.BrokerServiceStub(channel)
        return stub

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for channel in channels.values():
            await channel.close()

    # --- LeaderLink, for follower replicas (comet.broker.replica_fetcher) -------

    async def replica_fetch(
        self,
        address: str,
        topic: str,
        partition: int,
        offset: int,
        replica_id: str,
        leader_epoch: int,
        max_bytes: int,
        max_wait_ms: int,
    ) -> tuple[bytes, int]:
        """(stored batches from `offset`, the leader's high watermark)."""
        request = pb.ReplicaFetchRequest(
            topic=topic,
            partition=partition,
            offset=offset,
            replica_id=replica_id,
            leader_epoch=leader_epoch,
            max_bytes=max_bytes,
            max_wait_ms=max_wait_ms,
        )
        timeout = PEER_CALL_TIMEOUT_S + max_wait_ms / 1000
        reply = await _call(address, self.stub(address).ReplicaFetch(request, timeout=timeout))
        return reply.records, reply.high_watermark

    async def offset_for_leader_epoch(
        self,
        address: str,
        topic: str,
        partition: int,
        leader_epoch: int,
        current_leader_epoch: int,
        replica_id: str,
    ) -> tuple[int, int]:
        """(largest epoch <= leader_epoch on the leader, where it ends there)."""
        request = pb.OffsetForLeaderEpochRequest(
            topic=topic,
            partition=partition,
            leader_epoch=leader_epoch,
            current_leader_epoch=current_leader_epoch,
            replica_id=replica_id,
        )
        reply = await _call(
            address,
            self.stub(address).OffsetForLeaderEpoch(request, timeout=PEER_CALL_TIMEOUT_S),
        )
        return reply.leader_epoch, reply.end_offset

    # --- RemoteReader, for the group coordinator's Poll ------------------------

    async def read_records(
        self, address: str, topic: str, partition: int, offset: int, max_records: int
    ) -> list[Record]:
        """Records read at the leader with the original Consume call."""
        request = pb.ConsumeRequest(
            topic=topic, partition=partition, offset=offset, max_records=max_records
        )
        try:
            reply = await self.stub(address).Consume(request, timeout=PEER_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise _unavailable(address, exc) from None
        return [
            Record(m.offset, m.timestamp // NS_PER_MS, m.key or None, m.value or None, [])
            for m in reply.messages
        ]

    async def log_range(self, address: str, topic: str, partition: int) -> tuple[int, int]:
        """(log start, high watermark) asked of the leader with ListOffsets."""
        stub = self.stub(address)
        try:
            start = await stub.ListOffsets(
                pb.ListOffsetsRequest(topic=topic, partition=partition, timestamp_ms=-2),
                timeout=PEER_CALL_TIMEOUT_S,
            )
            end = await stub.ListOffsets(
                pb.ListOffsetsRequest(topic=topic, partition=partition, timestamp_ms=-1),
                timeout=PEER_CALL_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            raise _unavailable(address, exc) from None
        return start.offset, end.offset


async def _call(address: str, call: Any) -> Any:
    try:
        return await call
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") and exc.code() else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise PeerCallError(address, code, details or "") from None


def _unavailable(address: str, exc: grpc.RpcError) -> BrokerUnavailableError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return BrokerUnavailableError(f"call to broker at {address} failed ({code}): {details}")


class PeerCallError(Exception):
    """A call to another broker failed; carries the gRPC code name and details."""

    def __init__(self, address: str, code: str, details: str) -> None:
        super().__init__(f"{code} from broker at {address}: {details}")
        self.code = code
        self.details = details
