"""The report of a fault run: a text summary for people and a JSON one for scripts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tests.faults.checker import CheckResult

RECORD_COUNTS = (
    "sent",
    "acknowledged",
    "failed",
    "refused",
    "unacked_present",
    "final_records",
    "consumed",
    "commits_observed",
)


def render(result: CheckResult) -> str:
    """The report as text: verdict, faults, records, anomalies, unavailability."""
    c = result.counts
    lines = [
        f"fault run, seed {result.seed}: {'PASS' if result.ok else 'FAIL'}",
        f"history: {result.history_path}",
        "",
        "faults injected: "
        + (", ".join(f"{k} {n}" for k, n in sorted(result.faults.items())) or "none")
        + f" (total {sum(result.faults.values())})",
        "records: " + ", ".join(f"{k.replace('_', ' ')} {c.get(k, 0)}" for k in RECORD_COUNTS),
        "anomalies: "
        + ", ".join(f"{k.replace('_', ' ')} {c.get(k, 0)}" for k in CheckResult.ANOMALY_KINDS),
        "cluster healed: " + ("yes" if result.converged else f"NO ({result.convergence_detail})"),
        "longest unavailability (s) by the fault before it: "
        + (", ".join(f"{k} {v:.2f}" for k, v in result.unavailability.items()) or "none"),
    ]
    lines.append(
        "longest recovery after a heal (s): "
        + (", ".join(f"{k} {v:.2f}" for k, v in result.recovery.items()) or "none")
    )
    if result.worst_gap:
        g = result.worst_gap
        lines.append(
            f"longest of all: {g['seconds']:.2f}s on partition {g['partition']} "
            f"from t={g['from_t']:.2f}s (after {g['fault']})"
        )
    for kind, examples in sorted(result.anomalies.items()):
        lines.append(f"{kind}: {c.get(kind, 0)}, e.g.")
        lines.extend(f"  {example}" for example in examples)
    if not result.ok:
        lines += [
            "",
            f"reproduce: python -m tests.faults --seed {result.seed} (same faults, new history)",
            f"re-check:  python -m tests.faults --check {result.history_path}",
        ]
    return "\n".join(lines)


def save(result: CheckResult, path: Path) -> None:
    """Write the result as JSON (with its verdict) to `path`."""
    doc = asdict(result)
    doc["ok"] = result.ok
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
