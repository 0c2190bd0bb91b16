"""Publish random-walk price updates for a few stock symbols (the original Comet example).

Each update is JSON {"symbol", "price", "timestamp"} keyed by symbol, so one
symbol's updates stay in order on one partition.

Environment: BROKER_ADDR (default localhost:6174), TOPIC (prices),
PARTITIONS (3), INTERVAL seconds between rounds (0.5), SYMBOLS
(AAPL,GOOG,MSFT,AMZN,TSLA).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

from comet.client import ProducerConfig, TopicProducer

START_PRICES = {"AAPL": 190.0, "GOOG": 140.0, "MSFT": 410.0, "AMZN": 180.0, "TSLA": 250.0}


def main() -> int:
    """Send a price update per symbol every INTERVAL seconds until interrupted."""
    broker = os.environ.get("BROKER_ADDR", "localhost:6174")
    topic = os.environ.get("TOPIC", "prices")
    interval = float(os.environ.get("INTERVAL", "0.5"))
    symbols = os.environ.get("SYMBOLS", ",".join(START_PRICES)).split(",")
    prices = {s: START_PRICES.get(s, 100.0) for s in symbols}
    rng = random.Random()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    config = ProducerConfig(
        broker,
        topic=topic,
        partitions=int(os.environ.get("PARTITIONS", "3")),
        acks=1,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    sent = 0
    with TopicProducer(config) as producer:
        print(f"publishing prices of {', '.join(symbols)} to {topic} at {broker}", flush=True)
        try:
            while not stop:
                for symbol in symbols:
                    prices[symbol] = round(prices[symbol] * (1 + rng.gauss(0, 0.004)), 2)
                    update = {"symbol": symbol, "price": prices[symbol], "timestamp": time.time()}
                    producer.send(symbol, update)
                    sent += 1
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
    print(f"sent {sent} price updates", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
