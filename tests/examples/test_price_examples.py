"""The price producer and price-alert examples, as real processes against a real broker."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from comet.cli.local_broker import LocalBroker
from comet.client import CometClient, ProducerConfig, TopicProducer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def start(script: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, lines


def wait_for_line(lines: queue.Queue[str], needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if needle in line:
            return line
    raise AssertionError(f"no line containing {needle!r} within {timeout}s")


def test_producer_and_two_alert_consumers(broker: LocalBroker, topic: str) -> None:
    env = dict(
        os.environ,
        BROKER_ADDR=broker.address,
        TOPIC=topic,
        GROUP=f"alerts-{topic}",
        INTERVAL="0.05",
        THRESHOLD_PCT="5",
    )
    producer, produced = start("price_producer.py", env)
    alerts = [start("price_alert.py", env) for _ in range(2)]
    try:
        wait_for_line(produced, "publishing prices", 20)
        for _, lines in alerts:
            wait_for_line(lines, "watching", 20)
        with CometClient(broker.address) as client:
            deadline = time.monotonic() + 20
            while True:  # both alert consumers hold partitions of the 3
                group = client.describe_group(f"alerts-{topic}")
                owners = [m for m in group.members if any(tp.partitions for tp in m.assignment)]
                if len(owners) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(owners) == 2, group
        # a forced jump: AAPL far above any random-walk baseline
        cfg = ProducerConfig(broker.address, topic=topic, partitions=3, flush_interval=0.01)
        with TopicProducer(cfg) as jump:
            update = {"symbol": "AAPL", "price": 10_000.0, "timestamp": time.time()}
            jump.send(b"AAPL", json.dumps(update).encode()).result(10)
        merged: queue.Queue[str] = queue.Queue()
        for _, lines in alerts:
            threading.Thread(
                target=lambda q=lines: [merged.put(q.get()) for _ in iter(int, 1)], daemon=True
            ).start()
        line = wait_for_line(merged, "ALERT AAPL", 20)
        assert "to 10000.00" in line
    finally:
        for proc in [producer, *(p for p, _ in alerts)]:
            proc.terminate()
        for proc in [producer, *(p for p, _ in alerts)]:
            assert proc.wait(15) == 0
