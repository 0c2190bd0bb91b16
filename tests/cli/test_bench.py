"""`cometctl bench`: the figures it reports are there and add up (not how fast they are)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_several_processes_share_the_partitions_and_their_figures_add_up() -> None:
    data = bench("both", "--spawn-broker", "-n", "30001", "-p", "3", "--processes", "3")
    produce, consume = data["results"]
    assert data["settings"]["processes"] == 3
    assert (produce["processes"], produce["records"]) == (3, 30001)
    assert (consume["processes"], consume["records"]) == (3, 30001)
    # measured around each phase (in clock ticks: a small consume may round to 0.0)
    assert produce["broker_cpu_s"] >= 0 and consume["broker_cpu_s"] >= 0
    assert produce["broker_cpu_s"] + consume["broker_cpu_s"] > 0
    assert "samples" not in produce and produce["latency_ms"]["p50"] > 0


def test_client_send_batch_produce() -> None:
    data = bench(
        "produce", "--spawn-broker", "--api", "client", "--send-batch", "-n", "2500",
        "--batch-records", "1000",
    )  # fmt: skip
    [produce] = data["results"]
    assert data["settings"]["produce"] == "send_batch"
    assert produce["records"] == 2500 and produce["latency_ms"]["p50"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "2", "--processes", "3"], "each process needs a partition of its own"),
        (["--api", "client", "--processes", "2"], "--processes > 1 is for"),
    ],
)
def test_process_counts_that_cannot_work_are_refused(args: list[str], message: str) -> None:
    done = subprocess.run(
        [str(CTL), "bench", "both", "-n", "10", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and message in done.stderr
