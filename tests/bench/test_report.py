"""bench/: the report's tables, ratios and chart from synthetic figures (no peer servers)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.common import (
    PhaseResult,
    latency_result,
    percentile,
    phase_result,
    workloads,
)

RATES = {  # records/s per system, workload, phase
    ("comet-raw", "100B"): (1_200_000.0, 800_000.0),
    ("comet-client", "100B"): (600_000.0, 400_000.0),
    ("nats", "100B"): (40_000.0, 20_000.0),
    ("redis", "100B"): (120_000.0, 400_000.0),
    ("comet-raw", "1KiB"): (300_000.0, 150_000.0),
    ("comet-client", "1KiB"): (100_000.0, 90_000.0),
    ("nats", "1KiB"): (30_000.0, 10_000.0),
    ("redis", "1KiB"): (60_000.0, 300_000.0),
}


def synthetic_run(
    systems: tuple[str, ...] = ("comet-raw", "comet-client", "nats", "redis"),
) -> dict[str, Any]:
    """A run as compare.py stores it, with made-up figures."""
    results: list[dict[str, Any]] = []
    for wl in workloads(1.0):
        for system in systems:
            for phase, rate in zip(("produce", "consume"), RATES[(system, wl.name)], strict=True):
                r = PhaseResult(
                    system,
                    wl.name,
                    phase,
                    wl.count,
                    wl.size,
                    round(wl.count / rate, 3),
                    rate,
                    round(rate * wl.size / 1e6, 2),
                    1.0,
                    0.5,
                )
                results.append({"kind": "PhaseResult", **asdict(r)})
    for i, system in enumerate(systems):
        lat = latency_result(system, 1000, [0.001 * (i + 1)] * 99 + [0.01], 0, call="send")
        results.append({"kind": "LatencyResult", **asdict(lat)})
    return {
        "started": "2026-12-04 12:00 UTC",
        "command": "make bench-compare",
        "scale": 1.0,
        "machine": {
            "nproc": "2",
            "cpu": "Test CPU",
            "memory": "1.0 GiB",
            "kernel": "6.0",
            "python": "3.11.7",
        },
        "versions": {"comet": "0.1.0"},
        "workloads": [asdict(w) for w in workloads(1.0)],
        "results": results,
        "errors": [],
    }


def test_ratio_formatting() -> None:
    assert report.ratio(1_200_000, 40_000) == "30.0\u00d7"
    assert report.ratio(1_000_000, 5_000) == "200\u00d7"
    assert report.ratio(None, 5.0) == "\u2014"
    assert report.ratio(5.0, 0.0) == "\u2014"


def test_workload_label_and_rate_cell() -> None:
    assert report.workload_label("100B", 1_000_000, 100) == "1,000,000 \u00d7 100 B"
    assert report.workload_label("1KiB", 200_000, 1024) == "200,000 \u00d7 1 KiB"
    cell = report.fmt_rate({"records_per_s": 1234567.8, "mb_per_s": 123.45, "complete": False})
    assert cell == "1,234,568 /s \u00b7 123.5 MB/s \u2020"
    assert report.fmt_rate(None) == "\u2014"


def test_markdown_has_every_table_and_ratio() -> None:
    md = report.markdown(synthetic_run())
    assert "2 CPUs (Test CPU), 1.0 GiB memory" in md
    assert "Command: `make bench-compare`" in md
    # Durability is stated next to each system.
    assert "appendfsync everysec" in md and "fsync before the ack" in md
    assert "default background sync interval" in md
    # 100 B produce: 1.2M vs 40k -> 30x NATS, 10x Redis; client 600k -> 15x, 5x.
    row = next(
        line
        for line in md.splitlines()
        if line.startswith("| 1,000,000 \u00d7 100 B | produce") and "\u00d7 |" in line
    )
    assert row.split(" | ")[2:] == ["30.0\u00d7", "10.0\u00d7", "15.0\u00d7", "5.0\u00d7 |"]
    assert "| 1,200,000 /s \u00b7 120.0 MB/s |" in md
    # Latency table: p50 of the first system is 1 ms, p99 (nearest rank of 100) too.
    assert "| Comet raw API | `send` | 100 | 1.000 | 1.000 | 10.000 | 1 | 0 |" in md
    assert "## Errors" not in md


def test_markdown_without_peers_has_no_ratio_table() -> None:
    run = synthetic_run(("comet-raw",))
    run["errors"] = ["nats: nats-server is not installed"]
    md = report.markdown(run)
    assert "Comet / peer" not in md
    assert "- nats: nats-server is not installed" in md


def test_phase_result_and_percentiles() -> None:
    wl = workloads(0.001)[0]
    assert (wl.count, wl.size) == (1000, 100)
    r = phase_result("x", wl, "produce", 500, 0.25)
    assert (r.records_per_s, r.mb_per_s, r.complete) == (2000.0, 0.2, False)
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_write_report_writes_json_markdown_and_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = synthetic_run()
    json_path, md_path, png_path = report.write_report(run, tmp_path / "compare-test")
    assert json.loads(json_path.read_text())["results"] == run["results"]
    assert md_path.read_text().endswith("![chart](compare-test.png)\n")
    data = png_path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
