"""Alert on large price moves (the original Comet example).

Consumes price updates in a consumer group, keeps a baseline price per
symbol, and prints an ALERT line when a price moves THRESHOLD_PCT percent or
more from its baseline (the baseline then moves to the new price). Several
instances in one group split the topic's partitions.

Environment: BROKER_ADDR (default localhost:6174), TOPIC (prices), GROUP
(price-alerts), THRESHOLD_PCT (5).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from comet.client import Consumer, ConsumerConfig, Message


class PriceAlert:
    """Baselines per symbol and the threshold rule."""

    def __init__(self, threshold_pct: float) -> None:
        self.threshold_pct = threshold_pct
        self.baselines: dict[str, float] = {}
        self.lock = threading.Lock()

    def handle(self, message: Message) -> None:
        """Check one price update against its symbol's baseline."""
        update = message.value
        symbol, price = update["symbol"], float(update["price"])
        with self.lock:
            base = self.baselines.setdefault(symbol, price)
            change = (price - base) / base * 100 if base else 0.0
            if abs(change) >= self.threshold_pct:
                print(
                    f"ALERT {symbol} moved {change:+.2f}% from {base:.2f} to {price:.2f} "
                    f"(partition {message.partition}, offset {message.offset})",
                    flush=True,
                )
                self.baselines[symbol] = price


def main() -> int:
    """Consume until interrupted."""
    broker = os.environ.get("BROKER_ADDR", "localhost:6174")
    topic = os.environ.get("TOPIC", "prices")
    group = os.environ.get("GROUP", "price-alerts")
    threshold = float(os.environ.get("THRESHOLD_PCT", "5"))
    alert = PriceAlert(threshold)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = ConsumerConfig(
        broker, group=group, value_deserializer=json.loads, client_id=f"price-alert-{os.getpid()}"
    )
    with Consumer(config) as consumer:
        consumer.subscribe(topic, alert.handle)
        print(f"watching {topic} in group {group} for moves of {threshold}%", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
