"""Comet send→ack latency of single records at a fixed rate, raw API and client API.

    python -m bench.comet_latency --bootstrap 127.0.0.1:PORT --api raw|client [--acks 1]

Sends start on a fixed schedule (open loop, see bench.common.paced). raw:
one ProduceBatch call per record (a one-record RecordBatch framed in this
process). client: `TopicProducer.send_and_wait` with flush_interval 0 (no
linger; records that arrive while a request is in flight share the next
one). Prints a JSON list with one result on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import LatencyResult, emit, paced
from comet.aio import CometClient, ProducerConfig, TopicProducer
from comet.records import Compression, RecordBatchBuilder


async def raw_latency(
    bootstrap: str, topic: str, acks: str | int, rate: int, seconds: float
) -> LatencyResult:
    """ProduceBatch of one framed record per call."""
    async with CometClient(bootstrap, timeout=30) as client:
        await client.create_topic(topic, 1, exist_ok=True)

        async def send(value: bytes) -> None:
            builder = RecordBatchBuilder(Compression.NONE, max_bytes=1 << 20)
            builder.append(None, value, int(time.time() * 1000))
            await client.produce_batch(topic, 0, builder.build(), acks=acks)  # type: ignore[arg-type]

        return await paced("comet-raw", send, rate, seconds, call="ProduceBatch", acks=str(acks))


async def client_latency(
    bootstrap: str, topic: str, acks: str | int, rate: int, seconds: float
) -> LatencyResult:
    """TopicProducer.send_and_wait with no linger."""
    config = ProducerConfig(bootstrap, topic=topic, acks=acks, flush_interval=0.0)  # type: ignore[arg-type]
    async with TopicProducer(config) as producer:

        async def send(value: bytes) -> None:
            await producer.send_and_wait(None, value)

        return await paced(
            "comet-client", send, rate, seconds, call="TopicProducer.send_and_wait", acks=str(acks)
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--api", choices=["raw", "client"], default="raw")
    ap.add_argument("--acks", choices=["0", "1", "all"], default="1")
    ap.add_argument("--topic", default=None)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Measure one API's latency and print its JSON."""
    args = parse_args(argv)
    acks: str | int = "all" if args.acks == "all" else int(args.acks)
    topic = args.topic or f"lat-{args.api}-{int(time.time())}"
    run = raw_latency if args.api == "raw" else client_latency
    emit([asyncio.run(run(args.bootstrap, topic, acks, args.rate, args.seconds))])


if __name__ == "__main__":
    main()
