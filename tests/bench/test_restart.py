"""bench/restart.py: fill a little, kill -9 mid-stream, restart, serve every acknowledged tail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_restart_bench_reports_the_time_to_serving(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.restart",
            "--gib",
            "0.01",
            "--partitions",
            "2",
            "--dir",
            str(tmp_path / "run"),
            "--warm",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["bytes_on_disk"] >= 0.01 * (1 << 30)
    assert report["page_cache_dropped"] is False
    assert 0 < report["restart_to_healthy_s"] <= report["restart_to_serving_s"]
    assert not (tmp_path / "run").exists()  # removed without --keep
