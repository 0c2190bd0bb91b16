"""`cometctl bench`: the figures it reports are there and add up (not how fast they are)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from comet.cli.local_broker import LocalBroker

CTL = Path(sys.executable).parent / "cometctl"


def bench(*args: str) -> dict:
    done = subprocess.run(
        [str(CTL), "--json", "bench", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_raw_produce_and_consume_with_a_spawned_broker(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    data = bench("both", "--spawn-broker", "-n", "5000", "-s", "50", "--output", str(out))
    assert json.loads(out.read_text()) == data
    produce, consume = data["results"]
    assert (produce["phase"], produce["records"], consume["records"]) == ("produce", 5000, 5000)
    assert produce["records_per_s"] > 0 and consume["mb_per_s"] > 0
    assert set(produce["latency_ms"]) == {"p50", "p99", "p99.9", "max"}
    assert consume["broker_cpu_s"] is not None and consume["broker_peak_rss_mb"] > 0


def test_client_api_and_e2e_against_a_running_broker(broker: LocalBroker, topic: str) -> None:
    done = subprocess.run(
        [
            str(CTL),
            "--bootstrap",
            broker.address,
            "--json",
            "bench",
            "both",
            "--api",
            "client",
            "-n",
            "3000",
            "--topic",
            topic,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [(r["phase"], r["records"]) for r in results] == [("produce", 3000), ("consume", 3000)]
    done = subprocess.run(
        [
            str(CTL),
            "--bootstrap",
            broker.address,
            "--json",
            "bench",
            "e2e",
            "--rate",
            "500",
            "-n",
            "200",
            "--topic",
            f"{topic}-e2e",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    [e2e] = json.loads(done.stdout)["results"]
    assert e2e["phase"] == "e2e" and e2e["records"] == 200
    assert 0 < e2e["latency_ms"]["p50"] <= e2e["latency_ms"]["p99"]
