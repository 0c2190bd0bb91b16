"""Start and stop a real `comet` broker process on loopback (bench, examples, tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comet.cli.child_process import ChildProcess


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    address: str, timeout_s: float = 15.0, proc: subprocess.Popen | None = None
) -> None:
    """Poll the gRPC health service at `address` until SERVING; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {proc.returncode} before serving")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker at {address} not healthy within {timeout_s}s")
            time.sleep(0.05)


class LocalBroker(ChildProcess):
    """A `comet` process in single-broker mode on 127.0.0.1 with its own data directory."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory(prefix="comet-")
        self.data_dir = Path(data_dir) if data_dir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.log_path = (
            Path(log_path) if log_path else self.data_dir.parent / f"comet-{self.port}.log"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port clients dial."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> LocalBroker:
        """Start the process and wait until its health service says SERVING."""
        cmd = [
            sys.executable,
            "-m",
            "comet.cli.broker",
            "--etcd",
            "",
            "--data-dir",
            str(self.data_dir),
            "--addr",
            self.address,
            "--log-format",
            "json",
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_healthy(self.address, timeout_s, self.proc)
        return self
