"""Container health check: ask the broker's gRPC health service once.

Exit 0 when it answers SERVING, 1 otherwise (Docker's HEALTHCHECK contract).
The address is the first argument, else COMET_HEALTHCHECK_ADDR, else the
port of COMET_ADDR on 127.0.0.1 (COMET_ADDR=":6174" -> 127.0.0.1:6174).
Only grpcio and grpcio-health-checking are needed, both broker dependencies.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]", "*"}


def local_address(listen: str) -> str:
    """The address to dial for a broker listening on `listen` inside this container."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"no port in {listen!r}")
    return f"127.0.0.1:{port}" if host in WILDCARD_HOSTS else listen


def check(address: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """One health Check call: (serving?, what to print)."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
    except grpc.RpcError as exc:
        return False, f"{address}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main(argv: list[str]) -> int:
    """Check once and return the exit code."""
    try:
        address = (
            argv[1]
            if len(argv) > 1
            else os.environ.get("COMET_HEALTHCHECK_ADDR")
            or local_address(os.environ.get("COMET_ADDR", ":6174"))
        )
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    serving, text = check(address, float(os.environ.get("COMET_HEALTHCHECK_TIMEOUT", "3")))
    print(text)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
