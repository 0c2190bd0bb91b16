"""A short seeded fault run (about a minute): nothing acknowledged is lost or duplicated.

The same harness as `make chaos`, with faults coming faster so that a short
run sees several kinds. COMET_CHAOS_SEED and COMET_CHAOS_DURATION override
the seed and the seconds of faults.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.harness import RunConfig, run
from tests.faults.nemesis import NemesisConfig
from tests.faults.report import render

SEED = int(os.environ.get("COMET_CHAOS_SEED", "7"))
DURATION_S = float(os.environ.get("COMET_CHAOS_DURATION", "40"))
BRISK = NemesisConfig(gap_s=(0.5, 2.0), hold_s=(1.5, 5.0))

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_a_short_seeded_fault_run_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    result = await run(
        RunConfig(out_dir=tmp_path / "run", duration_s=DURATION_S, seed=SEED, nemesis=BRISK)
    )
    assert result.ok, render(result)
    assert sum(result.faults.values()) >= 4, render(result)
    assert result.counts["acknowledged"] >= 1000, render(result)
    assert result.counts["consumed_distinct"] >= result.counts["acknowledged"]
