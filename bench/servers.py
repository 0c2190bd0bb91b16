"""The servers a comparison run starts: one at a time, on loopback, stopped by process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from comet.cli.local_broker import LocalBroker, free_port

HOST = "127.0.0.1"
# Debian puts nats-server in /usr/sbin, which is not on every user's PATH.
EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def find_binary(name: str) -> str | None:
    """Path of an executable on PATH or in the usual system directories, or None."""
    found = shutil.which(name)
    if found:
        return found
    for directory in EXTRA_BIN_DIRS:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Until something accepts on HOST:port; RuntimeError if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((HOST, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout_s}s")
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group led by `proc`, SIGKILL it after `timeout_s`, reap `proc`.

    Nothing is signalled once `proc` has been reaped: its number may belong
    to someone else by then.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class PeerServer:
    """A peer server process in its own session and process group, with a temporary data dir."""

    name = "server"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port(HOST)
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> PeerServer:
        """Start the server and wait until it accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        """Stop the process group and delete the data directory."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            stop_group(proc)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PeerServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class NatsServer(PeerServer):
    """nats-server with JetStream, file storage in a temporary directory."""

    name = "nats-server"

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"nats://{HOST}:{self.port}"

    def command(self) -> list[str]:
        """nats-server -js on HOST:port, store dir in data_dir."""
        return [
            find_binary("nats-server") or "nats-server",
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.data_dir),
        ]


class RedisServer(PeerServer):
    """redis-server with an append-only file fsync'd every second, no RDB snapshots."""

    name = "redis-server"

    def command(self) -> list[str]:
        """redis-server on HOST:port, AOF everysec, data in data_dir."""
        return [
            find_binary("redis-server") or "redis-server",
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
        ]


def comet_broker(log_dir: Path) -> LocalBroker:
    """A single-broker Comet in a temporary data directory (default flush policy: batch)."""
    return LocalBroker(log_path=log_dir / "comet.log")


def server_version(cmd: list[str]) -> str:
    """First line of a server's --version output, or 'not installed'."""
    binary = find_binary(cmd[0])
    if binary is None:
        return "not installed"
    out = subprocess.run(
        [binary, *cmd[1:]], capture_output=True, text=True, timeout=10, check=False
    )
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
