"""Fixtures for coordinator tests: real etcd processes and coordinators on them.

- `etcd_server`: one etcd for the whole session (tests that do not stop it);
  each test gets its own key prefix (`etcd_prefix`), so tests never see each
  other's brokers or topics.
- `own_etcd`: a private etcd for a test that stops or restarts it.
- `coordinators`: starts EtcdCoordinators (short lease TTL) and closes them
  after the test.
- `spawn_coordinator`: a coordinator in a child process, for kill -9.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from comet.cli.local_etcd import EtcdProcess
from comet.cluster import BrokerRecord
from comet.cluster.etcd import EtcdCoordinator

# Short enough that expiry tests take seconds (etcd's minimum lease is 2 s).
TEST_LEASE_TTL_S = 2


async def eventually(check: Any, timeout_s: float = 5.0, what: str = "condition") -> float:
    """Await `check()` until it returns true; returns the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd shared by the session's tests that do not stop it."""
    root = tmp_path_factory.mktemp("etcd")
    etcd = EtcdProcess(data_dir=root / "data", log_path=root / "etcd.log")
    etcd.start()
    yield etcd
    etcd.stop()
    etcd.cleanup()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A private etcd that the test may stop, restart or pause."""
    etcd = EtcdProcess(data_dir=tmp_path / "etcd", log_path=tmp_path / "etcd.log")
    etcd.start()
    yield etcd
    etcd.stop()
    etcd.cleanup()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix no other test uses."""
    return f"/comet-test/{uuid.uuid4().hex[:12]}"


class StartCoordinator(Protocol):
    """Signature of the `coordinators` fixture."""

    async def __call__(
        self, broker_id: str, *, etcd: EtcdProcess | None = None, **options: Any
    ) -> EtcdCoordinator: ...


@pytest.fixture
async def coordinators(
    etcd_server: EtcdProcess, etcd_prefix: str
) -> AsyncIterator[StartCoordinator]:
    """Start EtcdCoordinators on one prefix (the shared etcd unless `etcd=` is given)."""
    started: list[EtcdCoordinator] = []

    async def start(
        broker_id: str, *, etcd: EtcdProcess | None = None, **options: Any
    ) -> EtcdCoordinator:
        options.setdefault("prefix", etcd_prefix)
        options.setdefault("lease_ttl_s", TEST_LEASE_TTL_S)
        coordinator = EtcdCoordinator([(etcd or etcd_server).endpoint], **options)
        await coordinator.start(BrokerRecord(broker_id, f"127.0.0.1:{7000 + len(started)}"))
        started.append(coordinator)
        return coordinator

    yield start
    for coordinator in started:
        await coordinator.close()


_MEMBER_SCRIPT = """
import asyncio, sys
from comet.cluster import BrokerRecord
from comet.cluster.etcd import EtcdCoordinator

async def main(endpoint, prefix, broker_id, ttl):
    coordinator = EtcdCoordinator([endpoint], prefix=prefix, lease_ttl_s=int(ttl))
    await coordinator.start(BrokerRecord(broker_id, "127.0.0.1:1"))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


class CoordinatorProcess:
    """An EtcdCoordinator in a child Python process, so a test can kill -9 it."""

    def __init__(self, endpoint: str, prefix: str, broker_id: str, ttl_s: int) -> None:
        self.args = [endpoint, prefix, broker_id, str(ttl_s)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> CoordinatorProcess:
        """Start the child and wait until its coordinator has started."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MEMBER_SCRIPT, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        output = b""
        while not output.endswith(b"ready\n") and b"\nready\n" not in output:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if readable else b""
            if not chunk:
                self.kill()
                raise RuntimeError(f"coordinator process did not start:\n{output.decode()}")
            output += chunk
        return self

    def kill(self) -> None:
        """SIGKILL: no lease revoke, no goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


@pytest.fixture
def spawn_coordinator(
    etcd_server: EtcdProcess, etcd_prefix: str
) -> Iterator[Callable[[str], CoordinatorProcess]]:
    """Start CoordinatorProcess children on the shared etcd and prefix; all killed at the end."""
    children: list[CoordinatorProcess] = []

    def spawn(broker_id: str) -> CoordinatorProcess:
        child = CoordinatorProcess(etcd_server.endpoint, etcd_prefix, broker_id, TEST_LEASE_TTL_S)
        children.append(child)
        return child.start()

    yield spawn
    for child in children:
        child.kill()
