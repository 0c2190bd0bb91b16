"""Start and stop a real `comet` broker process on loopback (bench, examples, tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


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


class LocalBroker:
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

    @property
    def pid(self) -> int:
        """Process id of the running broker."""
        assert self.proc is not None
        return self.proc.pid

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

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after `timeout_s`)."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the broker stops answering, its connections and leases stay open."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        """Stop and remove a temporary data directory."""
        if self.proc is not None:
            self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def log_text(self) -> str:
        """Everything the broker logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
