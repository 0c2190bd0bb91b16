"""What every side-by-side runner shares: workloads, payloads, clocks, figures as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Same scheme as `cometctl bench`: 256 distinct random values, cycled, so that
# every system gets incompressible payloads and no runner pays to make them.
DISTINCT_VALUES = 256
SEED = 42


@dataclass(frozen=True)
class Workload:
    """A throughput workload: `count` records of `size` bytes."""

    name: str
    count: int
    size: int


def workloads(scale: float = 1.0) -> list[Workload]:
    """The two throughput workloads of the comparison, counts multiplied by `scale`."""
    return [
        Workload("100B", max(1, int(1_000_000 * scale)), 100),
        Workload("1KiB", max(1, int(200_000 * scale)), 1024),
    ]


def payloads(size: int, seed: int = SEED) -> list[bytes]:
    """DISTINCT_VALUES random values of `size` bytes; record i uses value i % DISTINCT_VALUES."""
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(DISTINCT_VALUES)]


@dataclass
class PhaseResult:
    """Figures of one throughput phase (produce or consume) of one system."""

    system: str
    workload: str
    phase: str
    records: int
    size: int
    seconds: float
    records_per_s: float
    mb_per_s: float
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    complete: bool = True
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class LatencyResult:
    """Send→ack latency of single records sent at a fixed rate."""

    system: str
    rate: int
    records: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    late_sends: int = 0
    max_in_flight: int = 1
    notes: dict[str, Any] = field(default_factory=dict)


def phase_result(
    system: str,
    workload: Workload,
    phase: str,
    records: int,
    seconds: float,
    cpu: CpuMeter | None = None,
    **notes: Any,
) -> PhaseResult:
    """A PhaseResult from a count and a duration (and the CPU used since `cpu` started)."""
    client_cpu, server_cpu = cpu.read() if cpu is not None else (None, None)
    return PhaseResult(
        system,
        workload.name,
        phase,
        records,
        workload.size,
        round(seconds, 3),
        round(records / seconds, 1) if seconds > 0 else 0.0,
        round(records * workload.size / seconds / 1e6, 2) if seconds > 0 else 0.0,
        client_cpu,
        server_cpu,
        records >= workload.count,
        dict(notes),
    )


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def latency_result(
    system: str, rate: int, samples_s: list[float], late_sends: int, **notes: Any
) -> LatencyResult:
    """p50/p99/max in milliseconds of latencies given in seconds."""
    if not samples_s:
        return LatencyResult(system, rate, 0, 0.0, 0.0, 0.0, late_sends, notes=dict(notes))
    return LatencyResult(
        system,
        rate,
        len(samples_s),
        round(percentile(samples_s, 50) * 1000, 3),
        round(percentile(samples_s, 99) * 1000, 3),
        round(max(samples_s) * 1000, 3),
        late_sends,
        notes=dict(notes),
    )


def proc_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of process `pid`, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


class CpuMeter:
    """CPU seconds of this process and of a server process since construction."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.client0 = time.process_time()
        self.server0 = proc_cpu_s(server_pid) if server_pid else None

    def read(self) -> tuple[float, float | None]:
        """(client CPU s, server CPU s or None) used since construction."""
        client = round(time.process_time() - self.client0, 2)
        if self.server_pid is None or self.server0 is None:
            return client, None
        now = proc_cpu_s(self.server_pid)
        return client, None if now is None else round(now - self.server0, 2)


class Deadline:
    """A wall-clock bound for a load loop."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def expired(self) -> bool:
        """True once the bound has passed."""
        return time.monotonic() >= self.end


MAX_OUTSTANDING = 1000


async def paced(
    system: str,
    send: Callable[[bytes], Awaitable[object]],
    rate: int,
    seconds: float,
    **notes: Any,
) -> LatencyResult:
    """Start `send(value)` of one 100 B record every 1/rate s for `seconds`; send→ack latency.

    Open loop: a send starts on schedule whether or not earlier ones have
    been acknowledged (at most MAX_OUTSTANDING at once), so a slow ack does
    not lower the offered rate. A send whose start is more than one interval
    behind schedule (the event loop was busy) counts as late.
    """
    values = payloads(100, seed=7)
    count = int(rate * seconds)
    interval = 1.0 / rate
    samples: list[float] = []
    late = 0
    in_flight = max_in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(value: bytes) -> None:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        started = time.perf_counter()
        try:
            await send(value)
            samples.append(time.perf_counter() - started)
        finally:
            in_flight -= 1

    deadline = Deadline(seconds * 3 + 10)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(count):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -interval:
            late += 1
        if len(tasks) >= MAX_OUTSTANDING:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(one(values[i & 255]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if deadline.expired():
            break
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    result = latency_result(system, rate, samples, late, **notes)
    result.max_in_flight = max_in_flight
    result.notes["client_cpu_s"] = round(time.process_time() - cpu0, 2)
    return result


def emit(results: list[PhaseResult | LatencyResult]) -> None:
    """Write the results as one JSON document on stdout (the orchestrator reads it)."""
    json.dump([{"kind": type(r).__name__, **asdict(r)} for r in results], sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """One progress line on stderr (stdout is reserved for the JSON result)."""
    print(message, file=sys.stderr, flush=True)
