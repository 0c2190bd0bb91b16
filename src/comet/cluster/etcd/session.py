"""EtcdSession: the connection to etcd and the one place where its errors are mapped.

One aetcd client (one gRPC channel) per endpoint, created when first used
and kept until `close`; one of them is current. Channels are never closed
while the session lives, because closing a grpc.aio channel cancels the
calls in flight on it: instead, a failed endpoint is left behind by
`failover` (the next endpoint becomes current) and its channel, which gRPC
keeps reconnecting with a short backoff (CHANNEL_OPTIONS), serves again
once its etcd is back.

Every call has a deadline (`request_timeout_s`). A call that fails raises
EtcdUnavailableError (etcd down, unreachable or too slow: retriable, the
operation may or may not have happened) or EtcdRequestError (etcd refused
it; the message names the limit). grpc and aetcd exceptions never leave
this module.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager

import aetcd
import grpc
import structlog
from aetcd import rpc

from comet.cluster.coordinator import CoordinatorError
from comet.cluster.etcd.errors import EtcdRequestError, EtcdUnavailableError

log = structlog.get_logger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 5.0
DEFAULT_CONNECT_TIMEOUT_S = 3.0

CHANNEL_OPTIONS = {
    # Reconnect within about a second once etcd is back (gRPC's default backs off to 120 s).
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Notice a dead TCP peer under an idle watch; etcd refuses pings more often than 5 s.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    # A snapshot of a large cluster's metadata is bigger than gRPC's 4 MiB default.
    "grpc.max_receive_message_length": 256 * 1024 * 1024,
}

# A watch stream that etcd closes when its member loses the raft leader, so a
# partitioned member cannot keep feeding this broker an old view.
REQUIRE_LEADER = (("hasleader", "true"),)

_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
}


def parse_endpoint(text: str) -> tuple[str, int]:
    """(host, port) from "host:port", "http://host:port" or "[v6]:port"; ValueError otherwise."""
    rest = text.strip()
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"etcd endpoint must be host:port, got {text!r}")
    return host.strip("[]"), int(port)


class Backoff:
    """Exponential delays with jitter, from `first` up to `cap` seconds."""

    def __init__(self, first: float = 0.05, cap: float = 1.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        """The next delay to wait."""
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """Start again from the first delay."""
        self._next = self._first


class EtcdSession:
    """Connection to one etcd cluster through any of its endpoints; see the module docstring."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self._addresses = [parse_endpoint(e) for e in endpoints]
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._clients: dict[int, aetcd.Client] = {}
        self._current = 0
        self._closed = False

    @property
    def endpoints(self) -> str:
        """Every endpoint, comma-separated, for messages."""
        return ",".join(f"{h}:{p}" for h, p in self._addresses)

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        host, port = self._addresses[self._current]
        return f"{host}:{port}"

    def _client(self) -> aetcd.Client:
        if self._closed:
            raise EtcdUnavailableError(f"the session to etcd at {self.endpoints} is closed")
        client = self._clients.get(self._current)
        if client is None:
            host, port = self._addresses[self._current]
            client = aetcd.Client(
                host, port, timeout=self.request_timeout_s, options=dict(CHANNEL_OPTIONS)
            )
            self._clients[self._current] = client
        return client

    async def _stubs(self) -> aetcd.Client:
        client = self._client()
        await client.connect()  # creates the channel and stubs; no network round trip
        return client

    async def connect(self, probe_key: bytes) -> None:
        """Find an endpoint that answers a read of `probe_key` within connect_timeout_s."""
        problems = []
        deadline = time.monotonic() + self.connect_timeout_s
        for index in range(len(self._addresses)):
            self._current = index
            remaining = max(0.2, deadline - time.monotonic())
            try:
                with mapped_errors("connect", self.endpoint):
                    client = await self._stubs()
                    await client.kvstub.Range(
                        rpc.RangeRequest(key=probe_key, count_only=True), timeout=remaining
                    )
                return
            except EtcdUnavailableError as exc:
                problems.append(str(exc))
        raise EtcdUnavailableError(
            f"cannot reach etcd at {self.endpoints} within {self.connect_timeout_s:g} s "
            f"({'; '.join(problems)}); is etcd running there?"
        )

    def failover(self) -> None:
        """Send the next calls to the next endpoint (no-op with one endpoint)."""
        if len(self._addresses) > 1:
            before = self.endpoint
            self._current = (self._current + 1) % len(self._addresses)
            log.warning("etcd.failover", from_endpoint=before, to_endpoint=self.endpoint)

    # --- calls ----------------------------------------------------------------

    async def txn(
        self,
        compare: Sequence[rpc.Compare],
        success: Sequence[rpc.RequestOp],
        failure: Sequence[rpc.RequestOp] = (),
        *,
        what: str,
    ) -> rpc.TxnResponse:
        """One transaction; the response has `succeeded`, `header.revision` and `responses`."""
        with mapped_errors(what, self.endpoint):
            client = await self._stubs()
            request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
            return await client.kvstub.Txn(request, timeout=self.request_timeout_s)

    async def range(
        self, key: bytes, range_end: bytes = b"", *, keys_only: bool = False, what: str
    ) -> rpc.RangeResponse:
        """A linearizable read of `key` or [key, range_end), every key at one revision."""
        with mapped_errors(what, self.endpoint):
            client = await self._stubs()
            request = rpc.RangeRequest(key=key, range_end=range_end, keys_only=keys_only)
            return await client.kvstub.Range(request, timeout=self.request_timeout_s)

    async def grant_lease(self, ttl_s: int) -> int:
        """A new lease of `ttl_s` seconds; returns its id."""
        with mapped_errors("lease grant", self.endpoint):
            client = await self._stubs()
            reply = await client.leasestub.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl_s), timeout=self.request_timeout_s
            )
        if reply.error:
            raise EtcdRequestError(f"etcd refused a lease of {ttl_s} s: {reply.error}")
        return int(reply.ID)

    async def refresh_lease(self, lease_id: int, timeout_s: float) -> int:
        """Renew a lease once; returns the TTL granted, 0 if the lease no longer exists."""
        with mapped_errors("lease keepalive", self.endpoint):
            client = await self._stubs()
            requests = iter([rpc.LeaseKeepAliveRequest(ID=lease_id)])
            async for reply in client.leasestub.LeaseKeepAlive(requests, timeout=timeout_s):
                return int(reply.TTL)
        raise EtcdUnavailableError(f"etcd at {self.endpoint} closed the lease keepalive stream")

    async def revoke_lease(self, lease_id: int, timeout_s: float) -> None:
        """Revoke a lease: every key bound to it is deleted at once."""
        with mapped_errors("lease revoke", self.endpoint):
            client = await self._stubs()
            await client.leasestub.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=timeout_s
            )

    async def watch(self, key: bytes, range_end: bytes, start_revision: int) -> WatchStream:
        """Open a watch of [key, range_end) from `start_revision` on the current endpoint."""
        with mapped_errors("watch", self.endpoint):
            client = await self._stubs()
            call = rpc.WatchStub(client.channel).Watch(metadata=REQUIRE_LEADER)
            create = rpc.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=start_revision, progress_notify=True
            )
            await call.write(rpc.WatchRequest(create_request=create))
        return WatchStream(self.endpoint, call)

    async def close(self) -> None:
        """Close every channel; calls still in flight are cancelled, later calls refused."""
        self._closed = True
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await client.close()
            except Exception as exc:  # a channel that fails to close is gone either way
                log.warning("etcd.close_failed", error=str(exc))


@contextmanager
def mapped_errors(what: str, endpoint: str) -> Iterator[None]:
    """Turn grpc and aetcd errors raised inside into CoordinatorErrors naming the call."""
    where = f"etcd {what} at {endpoint}"
    try:
        yield
    except CoordinatorError:
        raise
    except grpc.aio.AioRpcError as exc:
        raise _status_error(where, exc.code(), exc.details() or "") from exc
    except aetcd.ClientError as exc:
        cause = exc.__cause__
        if isinstance(cause, grpc.aio.AioRpcError):
            raise _status_error(where, cause.code(), cause.details() or "") from exc
        raise EtcdUnavailableError(f"{where} failed: {exc}") from exc
    except (grpc.aio.UsageError, OSError) as exc:
        raise EtcdUnavailableError(f"{where} failed: {exc}") from exc


def _status_error(where: str, code: grpc.StatusCode, details: str) -> CoordinatorError:
    if code in _UNAVAILABLE_CODES:
        return EtcdUnavailableError(f"{where}: {code.name}: {details}; retry later")
    if code is grpc.StatusCode.INVALID_ARGUMENT and "too many operations" in details:
        return EtcdRequestError(
            f"{where}: {details} (raise etcd's --max-txn-ops; Comet writes a topic and "
            "all its partitions, or all offsets of one commit, in one transaction)"
        )
    if code is grpc.StatusCode.INVALID_ARGUMENT and "too large" in details:
        return EtcdRequestError(f"{where}: {details} (raise etcd's --max-request-bytes)")
    return EtcdRequestError(f"{where}: {code.name}: {details}")


class WatchStream:
    """One open etcd watch: responses in revision order until it fails."""

    def __init__(self, endpoint: str, call: grpc.aio.StreamStreamCall) -> None:
        self._endpoint = endpoint
        self._call = call

    async def responses(self) -> AsyncIterator[rpc.WatchResponse]:
        """Every response of the stream; raises EtcdUnavailableError when it breaks."""
        while True:
            with mapped_errors("watch", self._endpoint):
                response = await self._call.read()
            if response is grpc.aio.EOF:
                raise EtcdUnavailableError(f"etcd at {self._endpoint} ended the watch")
            yield response

    def cancel(self) -> None:
        """Stop the stream."""
        self._call.cancel()
