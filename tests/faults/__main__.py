"""Run the fault harness: `python -m tests.faults --duration 600 --seed N`.

Starts etcd and three brokers behind fault proxies in a fresh directory,
runs the workload under the seeded nemesis, heals, reads everything back
and checks the history. Prints the report; exits 1 when the check fails
(with the seed and the history file). `--check FILE` re-checks a saved
history without running anything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import structlog

from tests.faults.checker import check
from tests.faults.harness import RunConfig, run
from tests.faults.nemesis import KINDS, NemesisConfig
from tests.faults.report import render
from tests.faults.workload import WorkloadConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=None, help="nemesis seed [random, printed]")
    parser.add_argument("--out", type=Path, default=None, help="run directory [a new temp dir]")
    parser.add_argument("--partitions", type=int, default=WorkloadConfig.partitions)
    parser.add_argument("--rate", type=float, default=WorkloadConfig.rate, help="per producer")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"fault kinds [all: {','.join(KINDS)}]"
    )
    parser.add_argument(
        "--gap", type=_range, default=NemesisConfig.gap_s, help="seconds between faults: MIN,MAX"
    )
    parser.add_argument(
        "--hold", type=_range, default=NemesisConfig.hold_s, help="seconds a fault lasts: MIN,MAX"
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=NemesisConfig.overlap,
        help="chance a fault stays during the next one (0-1)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="of client.log"
    )
    parser.add_argument("--check", type=Path, default=None, help="only re-check a history file")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration: must be > 0")
    if not 0 <= args.overlap <= 1:
        parser.error("--overlap: must be between 0 and 1")
    unknown = set(args.kinds.split(",")) - set(KINDS)
    if unknown:
        parser.error(f"--kinds: unknown {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    return args


def _range(text: str) -> tuple[float, float]:
    """MIN,MAX seconds, 0 <= MIN <= MAX."""
    low, sep, high = text.partition(",")
    try:
        bounds = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN,MAX seconds") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= MIN <= MAX")
    return bounds


def main(argv: list[str] | None = None) -> int:
    """Run (or re-check) and print the report; 0 when the check passes."""
    args = parse_args(argv)
    if args.check is not None:
        result = check(args.check)
        print(render(result))
        return 0 if result.ok else 1
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"comet-faults-seed{seed}-"))
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    config = RunConfig(
        out_dir=out,
        duration_s=args.duration,
        seed=seed,
        workload=replace(WorkloadConfig(), partitions=args.partitions, rate=args.rate),
        nemesis=NemesisConfig(kinds=kinds, gap_s=args.gap, hold_s=args.hold, overlap=args.overlap),
    )
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=out / "client.log",
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    structlog.configure(  # the replica read opens logs: their events go to client.log too
        processors=[structlog.processors.KeyValueRenderer(sort_keys=True)],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    print(f"fault run: seed {seed}, {args.duration:g}s of faults, output in {out}", flush=True)
    result = asyncio.run(run(config))
    print(render(result))
    if not result.ok:
        print(f"\nFAILED: seed {seed}, history {result.history_path}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
