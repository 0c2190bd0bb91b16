"""bench/compare.py: clients and servers are stopped by process group; a tiny peer run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import compare
from bench.servers import find_binary, stop_group


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stop_group_ends_the_leader_and_its_children() -> None:
    # A leader that ignores SIGTERM and has a child: both must be gone.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    started = time.monotonic()
    stop_group(proc, timeout_s=0.5)
    assert proc.returncode is not None
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_run_json_parses_stdout_and_kills_on_timeout() -> None:
    assert compare.run_json([sys.executable, "-c", "print('[1, 2]')"], 10) == [1, 2]
    with pytest.raises(compare.StepError, match="timed out"):
        compare.run_json([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    with pytest.raises(compare.StepError, match="exited with code 3"):
        compare.run_json([sys.executable, "-c", "raise SystemExit(3)"], 10)


def test_parse_args_scale_and_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALE", "0.1")
    args = compare.parse_args(["--systems", "nats,redis"])
    assert args.scale == 0.1
    assert args.systems == ["nats", "redis"]
    with pytest.raises(SystemExit):
        compare.parse_args(["--systems", "kafka"])


PEERS_READY = (
    find_binary("nats-server") is not None
    and find_binary("redis-server") is not None
    and importlib.util.find_spec("nats") is not None
    and importlib.util.find_spec("redis") is not None
    and importlib.util.find_spec("matplotlib") is not None
)


@pytest.mark.skipif(not PEERS_READY, reason="nats-server, redis-server and .[bench] not installed")
def test_tiny_peer_run(tmp_path: Path) -> None:
    """Optional: a 1,000-record run against real nats-server and redis-server."""
    code = compare.main(
        [
            "--systems",
            "nats,redis",
            "--scale",
            "0.001",
            "--latency-seconds",
            "0.2",
            "--rate",
            "200",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    (md,) = tmp_path.glob("compare-*.md")
    text = md.read_text()
    assert "| 1,000 \u00d7 100 B | produce |" in text
    assert "NATS JetStream" in text and "Redis Streams" in text
    assert list(tmp_path.glob("compare-*.png"))
