"""Restart after `kill -9` with a large log on disk: how long until the broker serves again.

    python -m bench.restart [--gib 2] [--partitions 4] [--dir DIR] [--keep] [--warm]

Fills a single broker with --gib GiB of 1 KiB records (raw ProduceBatch,
acks=1), kills it with SIGKILL while a produce stream is still running,
drops the page cache when run as root (so the restart reads the disk
cold), starts it again on the same data directory and measures until
(a) the health service answers SERVING and (b) a fetch of the last
acknowledged record of every partition succeeds. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

from comet.aio import CometClient
from comet.cli.local_broker import LocalBroker
from comet.errors import CometError
from comet.records import RecordBatchBuilder

TOPIC = "restart-bench"
RECORD = 1024
BATCH = 500


async def fill(address: str, partitions: int, total_bytes: int, stop: asyncio.Event) -> list[int]:
    """Produce until `total_bytes` are acknowledged (then on until `stop`); last acked offsets."""
    values = [random.Random(i).randbytes(RECORD) for i in range(64)]
    last = [-1] * partitions
    acked = 0
    async with CometClient(address, timeout=30) as client:
        await client.create_topic(TOPIC, partitions, exist_ok=True)

        async def stream(p: int) -> None:
            nonlocal acked
            while not stop.is_set():
                builder = RecordBatchBuilder(max_bytes=1 << 30)
                ts = int(time.time() * 1000)
                for i in range(BATCH):
                    builder.append(None, values[i & 63], ts)
                try:
                    result = await client.produce_batch(TOPIC, p, builder.build(), acks=1)
                except CometError:
                    return  # the broker was killed under this request
                last[p] = result.last_offset
                acked += BATCH * RECORD
                if acked >= total_bytes and not stop.is_set():
                    filled.set()

        filled = asyncio.Event()
        tasks = [asyncio.create_task(stream(p)) for p in range(partitions)]
        await filled.wait()
        await asyncio.sleep(0.2)  # killed mid-stream, with requests in flight
        stop.set()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    return last


def drop_page_cache() -> bool:
    """Write back and drop the page cache (root only); False when not permitted."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


async def first_fetches(address: str, last: list[int]) -> None:
    """Fetch the last acknowledged record of every partition."""
    async with CometClient(address, timeout=10) as client:
        for p, offset in enumerate(last):
            if offset >= 0:
                result = await client.fetch(TOPIC, p, offset, max_bytes=4096)
                if not result.records:
                    raise RuntimeError(f"partition {p}: offset {offset} not served after restart")


def main() -> None:
    """Fill, kill -9, restart, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--dir", help="data directory [default: a temporary one]")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--warm", action="store_true", help="do not drop the page cache before the restart"
    )
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="comet-restart-"))
    broker = LocalBroker(data_dir=root / "data", log_path=root / "broker.log")
    try:
        broker.start()
        t0 = time.perf_counter()
        last = asyncio.run(
            fill(broker.address, args.partitions, int(args.gib * (1 << 30)), asyncio.Event())
        )
        fill_s = time.perf_counter() - t0
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait()
        on_disk = sum(f.stat().st_size for f in (root / "data").rglob("*") if f.is_file())
        cold = False if args.warm else drop_page_cache()
        started = time.perf_counter()
        broker.start(timeout_s=60)  # polls the health service every 50 ms
        healthy = time.perf_counter() - started
        asyncio.run(first_fetches(broker.address, last))
        serving = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "bytes_on_disk": on_disk,
                    "partitions": args.partitions,
                    "fill_seconds": round(fill_s, 2),
                    "page_cache_dropped": cold,
                    "restart_to_healthy_s": round(healthy, 3),
                    "restart_to_serving_s": round(serving, 3),
                },
                indent=2,
            )
        )
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
