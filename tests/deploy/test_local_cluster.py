"""deploy/local_cluster.py (`make cluster`): a real etcd and three real brokers on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from comet.cli.local_broker import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local_cluster.py"
CTL = Path(sys.executable).parent / "cometctl"


def _run(base: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dir", str(base), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="checks processes via /proc")
def test_up_status_cluster_down(tmp_path: Path) -> None:
    """up starts etcd + 3 brokers once; cometctl sees 3 brokers; down stops exactly them."""
    base = tmp_path / "cluster"
    ports = _ports(3)
    up = _run(base, "up", "--ports", ",".join(map(str, ports)))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        match = re.search(r"^bootstrap: (\S+)$", up.stdout, re.M)
        assert match, up.stdout
        bootstrap = match.group(1)
        assert bootstrap == ",".join(f"127.0.0.1:{p}" for p in ports)
        for name in ("etcd", "broker-1", "broker-2", "broker-3"):
            assert (base / "logs" / f"{name}.log").exists()

        status = _run(base, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["bootstrap"] == bootstrap
        procs = {p["name"]: p for p in report["processes"]}
        assert set(procs) == {"etcd", "broker-1", "broker-2", "broker-3"}
        assert all(p["running"] and p["healthy"] for p in procs.values()), procs
        pids = {name: p["pid"] for name, p in procs.items()}

        again = _run(base, "up", "--ports", ",".join(map(str, ports)))
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert {
            p["name"]: p["pid"]
            for p in json.loads(_run(base, "status", "--json").stdout)["processes"]
        } == pids

        ctl = subprocess.run(
            [str(CTL), "--bootstrap", bootstrap, "--json", "cluster"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ctl.returncode == 0, ctl.stderr
        brokers = {b["id"]: b["address"] for b in json.loads(ctl.stdout)["brokers"]}
        assert brokers == {f"broker-{n}": f"127.0.0.1:{p}" for n, p in enumerate(ports, 1)}
    finally:
        down = _run(base, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [name for name, pid in pids.items() if _alive(pid)], down.stdout
    assert down.stdout.count(" stopped") == 4, down.stdout
    assert (base / "data" / "broker-1").is_dir(), "data is kept without --clean"

    second = _run(base, "down")
    assert second.returncode == 0
    assert "nothing to stop" in second.stdout
    stopped = _run(base, "status", "--json")
    assert stopped.returncode == 3 and json.loads(stopped.stdout)["processes"] == []

    clean = _run(base, "down", "--clean")
    assert clean.returncode == 0 and not (base / "data").exists()


def test_down_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    """A recorded pid that now runs something else is not signalled."""
    base = tmp_path / "cluster"
    base.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {
            "name": "broker-1",
            "pid": other.pid,
            "args": ["--broker-id=broker-1"],
            "start_time": "1",
            "log": str(base / "logs" / "broker-1.log"),
        }
        (base / "pids.json").write_text(json.dumps({"processes": [record]}))
        down = _run(base, "down", timeout=30)
        assert down.returncode == 0, down.stderr
        assert "left alone" in down.stdout
        assert other.poll() is None
        assert not (base / "pids.json").exists()
    finally:
        other.kill()
        other.wait()


def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    """A broker port already in use stops `up` before it starts anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        up = _run(tmp_path / "c", "up", "--ports", f"{busy},{free_port()}", timeout=30)
    assert up.returncode == 1
    assert f"{busy}" in up.stderr and "in use" in up.stderr
    assert not (tmp_path / "c" / "pids.json").exists()
    assert os.listdir(tmp_path / "c") == ["lock"]
