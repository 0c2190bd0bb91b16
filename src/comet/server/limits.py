"""Resource limits of the gRPC server: request size, streams per connection, connections, RPCs.

Four caps, each a broker flag (README, docs/operations.md):

- `--max-request-bytes`: gRPC's max receive message length. A larger
  request is refused by gRPC before it reaches the broker, with
  RESOURCE_EXHAUSTED "Received message larger than max (N vs. LIMIT)".
- `--max-concurrent-streams`: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, the
  in-flight calls of one connection. Like Kafka's per-connection
  backpressure, calls above it are not refused: the client holds them
  until one of its calls on that connection completes.
- `--max-connections`: gRPC's incoming connection quota. A connection above
  it is closed as soon as it is accepted; the client sees UNAVAILABLE
  ("Socket closed") and retries, as with Kafka's max.connections.
- `--max-inflight-requests`: client calls being served by the whole broker
  at once (long-poll fetches included), counted by an interceptor. A call
  above it is answered RESOURCE_EXHAUSTED naming the flag, with trailing
  metadata comet-error=BrokerOverloadedError (the client retries it).
  Health checks, reflection and broker-to-broker replication calls are not
  counted, so an overloaded broker still reports its health and keeps its
  followers in sync.
"""

from __future__ import annotations

import resource
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

log = structlog.get_logger(__name__)

OVERLOADED_REASON = "BrokerOverloadedError"
EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
EXEMPT_METHODS = frozenset(
    {"/comet.v1.BrokerService/ReplicaFetch", "/comet.v1.BrokerService/OffsetForLeaderEpoch"}
)
SEND_HEADROOM_BYTES = 1024 * 1024  # a fetch answer may carry one batch above max_bytes
FD_HEADROOM = 1024  # descriptors kept for segment and index files beside connections
FD_TARGET = 1 << 20  # soft limit asked for when the hard limit is unlimited


def server_options(
    max_request_bytes: int,
    max_concurrent_streams: int,
    max_connections: int,
    max_inflight_requests: int,
) -> list[tuple[str, int]]:
    """grpc.aio.server options for the transport-level limits.

    gRPC cancels calls that wait to be picked up by the server while more
    than `grpc.server.max_pending_requests` (1,000 by default) wait; a burst
    of long-polls from a few clients gets there. The pending limits follow
    --max-inflight-requests instead, so a burst within it is served and one
    above it is refused by InflightLimiter with a message naming the flag.
    """
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", max_request_bytes + SEND_HEADROOM_BYTES),
        ("grpc.max_concurrent_streams", max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.server.max_pending_requests", max(max_inflight_requests, 1000)),
        ("grpc.server.max_pending_requests_hard_limit", max(2 * max_inflight_requests, 3000)),
        ("grpc.so_reuseport", 0),
    ]


def raise_open_files_limit(max_connections: int) -> int:
    """Raise the soft open-files limit to the hard one; warn if connections could exhaust it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = FD_TARGET if hard == resource.RLIM_INFINITY else hard
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                log.warning("server.fd_limit_unchanged", soft=soft, hard=hard, error=str(exc))
    if max_connections + FD_HEADROOM > soft:
        log.warning(
            "server.fd_limit_low",
            open_files_limit=soft,
            max_connections=max_connections,
            hint="raise `ulimit -n` or lower --max-connections; log segments need files too",
        )
    return soft


class InflightLimiter(grpc.aio.ServerInterceptor):
    """Caps the client calls served at once; refuses the excess with RESOURCE_EXHAUSTED.

    Runs on the server's event loop only, so plain counters suffice. The
    wrapped handler of each method is built once and cached.
    """

    def __init__(self, limit: int, flag: str = "--max-inflight-requests") -> None:
        if limit < 1:
            raise ValueError(f"{flag}: must be at least 1, got {limit}")
        self.limit = limit
        self.flag = flag
        self.active = 0
        self._saturated = False
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler, wrapped to count and cap it unless it is exempt."""
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or method in EXEMPT_METHODS or method.startswith(EXEMPT_PREFIXES):
            return handler
        if handler.request_streaming or handler.response_streaming:
            return handler  # the broker serves unary calls only; nothing else to count
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._limited(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = wrapped
        return wrapped

    def _limited(self, behavior: Callable[[Any, Any], Awaitable[Any]]) -> Callable[..., Any]:
        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.active >= self.limit:
                await self._refuse(context)
            self.active += 1
            try:
                return await behavior(request, context)
            finally:
                self.active -= 1
                if self._saturated and self.active < self.limit // 2:
                    self._saturated = False
                    log.info("server.inflight_recovered", active=self.active, limit=self.limit)

        return limited

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        if not self._saturated:  # log once per overload episode, not per refused call
            self._saturated = True
            log.warning("server.inflight_limit_reached", limit=self.limit, flag=self.flag)
        context.set_trailing_metadata((("comet-error", OVERLOADED_REASON),))
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"broker overloaded: {self.active} requests in flight, the limit "
            f"{self.flag}={self.limit}; retry with backoff",
        )
