"""Mapping broker errors to gRPC statuses, and forwarding calls to other brokers."""

from __future__ import annotations

import errno
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from comet.broker.errors import (
    BrokerError,
    InvalidRequestError,
    NotCoordinatorError,
    NotLeaderError,
)
from comet.cluster import CoordinatorError
from comet.server.wire import MalformedRequest

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

NS_PER_MS = 1_000_000
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def handles_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map BrokerError to its status code and unexpected errors to INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidRequestError(
                    f"request: not a valid {request.message_type} ({request.error})"
                )
            return await method(self, request, context)
        except BrokerError as exc:
            metadata: tuple[tuple[str, str | bytes], ...] = (("comet-error", type(exc).__name__),)
            if isinstance(exc, NotLeaderError) and exc.leader_id:
                metadata += (
                    ("comet-leader-id", exc.leader_id),
                    ("comet-leader-address", exc.leader_address),
                )
            if isinstance(exc, NotCoordinatorError) and exc.coordinator_id:
                metadata += (
                    ("comet-coordinator-id", exc.coordinator_id),
                    ("comet-coordinator-address", exc.coordinator_address),
                )
            metadata += exc.extra_metadata
            context.set_trailing_metadata(metadata)
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except grpc.aio.AbortError:
            raise
        except CoordinatorError as exc:
            # The metadata store (etcd) failed under a call the broker did not map:
            # retriable once it is back.
            log.warning("rpc.coordinator_error", rpc=method.__name__, error=str(exc))
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"cluster metadata store unavailable: {exc}"
            )
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                log.exception("rpc.internal_error", rpc=method.__name__)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"{method.__name__}: I/O error: {exc}"
                )
            # A broker-local file (topic metadata, committed offsets) could not be written.
            log.warning("rpc.disk_full", rpc=method.__name__, error=str(exc))
            context.set_trailing_metadata((("comet-error", "StorageFullError"),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{method.__name__}: no space left on the broker's disk: {exc}; "
                "free space and retry",
            )
        except Exception:
            log.exception("rpc.internal_error", rpc=method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error")
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


async def forward(context: grpc.aio.ServicerContext, call: Awaitable[Resp]) -> Resp:
    """Await a call to another broker; pass its failure back as it came."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        context.set_trailing_metadata(tuple(exc.trailing_metadata() or ()))
        await context.abort(exc.code(), exc.details() or "")
    raise AssertionError("unreachable")  # pragma: no cover
