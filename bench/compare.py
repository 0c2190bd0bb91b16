"""`make bench-compare`: Comet, NATS JetStream and Redis Streams, same workloads, one machine.

    python -m bench.compare [--scale 0.1] [--systems comet,nats,redis] [--out-dir bench/results]

Starts one server at a time on 127.0.0.1 (a Comet broker via LocalBroker,
`nats-server -js`, `redis-server` with AOF everysec), each with a temporary
data directory, and runs against it, in a separate client process per step:
1,000,000 x 100 B and 200,000 x 1 KiB produce then consume, and single
100 B records at 1,000/s for 5 s (send→ack latency). Comet runs twice: raw
API and client API (`cometctl bench --api raw|client --json`). Every server
is stopped by its PID (process group for the peers), also on error, Ctrl-C
or SIGTERM. Writes bench/results/compare-DATE.{md,png,json} and prints the
Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import PhaseResult, Workload, proc_cpu_s, progress, workloads
from bench.report import machine_description, write_report
from bench.servers import (
    NatsServer,
    RedisServer,
    comet_broker,
    find_binary,
    server_version,
    stop_group,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ALL_SYSTEMS = ("comet", "nats", "redis")
# Slack on top of a runner's own loop bounds before its process group is killed.
SUBPROCESS_SLACK_S = 120.0


class StepError(RuntimeError):
    """A client step failed; the message says which and why."""


def run_json(cmd: list[str], timeout_s: float) -> Any:
    """Run a client command in its own process group; its stdout parsed as JSON.

    The group is killed when the time is up or when this process is
    interrupted, so no client outlives the orchestrator.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=None,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise StepError(f"{Path(cmd[0]).name} {cmd[1:3]} timed out after {timeout_s:.0f}s") from exc
    finally:
        stop_group(proc)
    if proc.returncode != 0:
        raise StepError(f"{' '.join(cmd[:4])} ... exited with code {proc.returncode}")
    return json.loads(out)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d-%H%M")


def versions() -> dict[str, str]:
    """Versions of the servers and client libraries that take part."""
    out: dict[str, str] = {}
    for dist, label in (
        ("comet-broker", "comet"),
        ("grpcio", "grpcio"),
        ("nats-py", "nats-py"),
        ("redis", "redis-py"),
        ("hiredis", "hiredis"),
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[label] = version(dist)
    out["comet"] = out.get("comet", "?") + comet_revision()
    out["nats-server"] = server_version(["nats-server", "--version"]).removeprefix("nats-server: ")
    redis_line = server_version(["redis-server", "--version"])
    out["redis-server"] = next(
        (w.split("=", 1)[1] for w in redis_line.split() if w.startswith("v=")), redis_line
    )
    return out


def comet_revision() -> str:
    """' (git abc1234)' for the tree being measured, noting uncommitted changes under src/."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" (git {rev}{', uncommitted changes in src/' if dirty else ''})"


def comet_phase(
    broker_pid: int,
    address: str,
    api: str,
    workload: Workload,
    phase: str,
    topic: str,
    max_seconds: float,
) -> dict[str, Any]:
    """One `cometctl bench` phase as a PhaseResult dict; broker CPU measured around it."""
    cmd = [
        str(BIN / "cometctl"),
        "--bootstrap",
        address,
        "--json",
        "bench",
        phase,
        "--api",
        api,
        "-n",
        str(workload.count),
        "-s",
        str(workload.size),
        "--acks",
        "1",
        "--topic",
        topic,
    ]
    if api == "client":
        cmd += ["--batch-records", "5000"]
    cpu0 = proc_cpu_s(broker_pid)
    data = run_json(cmd, max_seconds + SUBPROCESS_SLACK_S)
    cpu1 = proc_cpu_s(broker_pid)
    (r,) = data["results"]
    result = PhaseResult(
        system=f"comet-{api}",
        workload=workload.name,
        phase=phase,
        records=r["records"],
        size=workload.size,
        seconds=r["seconds"],
        records_per_s=float(r["records_per_s"]),
        mb_per_s=float(r["mb_per_s"]),
        client_cpu_s=r["client_cpu_s"],
        server_cpu_s=None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
        complete=r["records"] >= workload.count,
        notes={"settings": data["settings"], "latency_ms": r.get("latency_ms", {})},
    )
    return {"kind": "PhaseResult", **asdict(result)}


def run_comet(args: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, Any]]:
    """Both APIs, both workloads, then latency, against one Comet broker."""
    with comet_broker(log_dir) as broker:
        progress(f"comet broker PID {broker.pid} on {broker.address}")
        for api in ("raw", "client"):
            for wl in workloads(args.scale):
                topic = f"cmp-{api}-{wl.name}-{int(time.time())}"
                for phase in ("produce", "consume"):
                    r = comet_phase(broker.pid, broker.address, api, wl, phase, topic, args.max_s)
                    progress(f"comet {api} {wl.name} {phase}: {r['records_per_s']:,.0f} records/s")
                    yield r
        for api in ("raw", "client"):
            cmd = [
                sys.executable,
                "-m",
                "bench.comet_latency",
                "--bootstrap",
                broker.address,
                "--api",
                api,
                "--acks",
                "1",
                "--rate",
                str(args.rate),
                "--seconds",
                str(args.latency_seconds),
            ]
            (lat,) = run_json(cmd, args.latency_seconds * 3 + SUBPROCESS_SLACK_S)
            progress(f"comet {api} latency: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
            yield lat


def _peer_args(args: argparse.Namespace, pid: int) -> list[str]:
    return [
        "--server-pid",
        str(pid),
        "--scale",
        str(args.scale),
        "--max-seconds",
        str(args.max_s),
        "--rate",
        str(args.rate),
        "--latency-seconds",
        str(args.latency_seconds),
    ]


def _peer_timeout(args: argparse.Namespace) -> float:
    # Two workloads x (produce + consume), each bounded by max_s, plus latency.
    return 4 * args.max_s + args.latency_seconds * 3 + SUBPROCESS_SLACK_S


def run_nats(args: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, Any]]:
    """The NATS runner against a fresh nats-server with JetStream."""
    if find_binary("nats-server") is None:
        raise StepError("nats-server is not installed (make bench-compare installs it)")
    if importlib.util.find_spec("nats") is None:
        raise StepError("nats-py is not installed (pip install -e '.[bench]')")
    with NatsServer(log_dir) as server:
        progress(f"nats-server PID {server.pid} on {server.url}")
        cmd = [sys.executable, "-m", "bench.peers_nats", "--url", server.url]
        yield from run_json(cmd + _peer_args(args, server.pid), _peer_timeout(args))


def run_redis(args: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, Any]]:
    """The Redis runner against a fresh redis-server with AOF everysec."""
    if find_binary("redis-server") is None:
        raise StepError("redis-server is not installed (make bench-compare installs it)")
    if importlib.util.find_spec("redis") is None:
        raise StepError("redis is not installed (pip install -e '.[bench]')")
    with RedisServer(log_dir) as server:
        progress(f"redis-server PID {server.pid} on 127.0.0.1:{server.port}")
        cmd = [sys.executable, "-m", "bench.peers_redis", "--port", str(server.port)]
        yield from run_json(cmd + _peer_args(args, server.pid), _peer_timeout(args))


RUNNERS = {"comet": run_comet, "nats": run_nats, "redis": run_redis}


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("SCALE") or 1.0),
        help="multiply the record counts (default 1, or $SCALE)",
    )
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--max-seconds", dest="max_s", type=float, default=240.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(ALL_SYSTEMS)
    if unknown:
        ap.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    if args.scale <= 0:
        ap.error("--scale must be > 0")
    return args


def command_line(argv: list[str]) -> str:
    """How this run was started, for the report."""
    if os.environ.get("MAKELEVEL"):
        scale = os.environ.get("SCALE")
        return "make bench-compare" + (f" SCALE={scale}" if scale else "")
    return " ".join(["python -m bench.compare", *argv])


def main(argv: list[str] | None = None) -> int:
    """Run every system in turn, write the report, print it; 1 if any system failed."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-compare-logs-"))
    run: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": command_line(argv),
        "scale": args.scale,
        "machine": machine_description(),
        "versions": versions(),
        "workloads": [asdict(w) for w in workloads(args.scale)],
        "latency": {"rate": args.rate, "seconds": args.latency_seconds, "size": 100},
        "results": [],
        "errors": [],
    }
    base = args.out_dir / f"compare-{_stamp()}"
    for system in args.systems:
        progress(f"== {system}")
        try:
            for result in RUNNERS[system](args, log_dir):
                run["results"].append(result)
        except (StepError, RuntimeError, OSError, ValueError) as exc:
            run["errors"].append(f"{system}: {exc}")
            progress(f"{system} failed: {exc} (server logs in {log_dir})")
    json_path, md_path, png_path = write_report(run, base)
    sys.stdout.write(md_path.read_text())
    sys.stdout.write(f"\nwrote {md_path}, {png_path} and {json_path}\n")
    if run["errors"]:
        sys.stdout.write(f"server logs kept in {log_dir}\n")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
