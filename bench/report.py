"""Markdown table and PNG chart of a side-by-side run, from its JSON results.

    python -m bench.report bench/results/compare-DATE.json   # rewrite the .md and .png

A run is a dict: {"machine": {...}, "command": str, "scale": float,
"started": str, "versions": {...}, "results": [result dicts from the runners]}.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# Display order, label, and durability of every system the comparison knows.
SYSTEMS: dict[str, dict[str, str]] = {
    "comet-raw": {
        "label": "Comet raw API",
        "short": "Comet raw",
        "api": "`cometctl bench --api raw`: ProduceBatch of 2,000-record batches framed in "
        "the client, 8 in flight / Fetch of 4 MiB from offset 0, every record decoded",
        "durability": "acks=1, fsync before the ack (group commit, `--flush-policy batch`)",
        "color": "#1f4e99",
    },
    "comet-client": {
        "label": "Comet client API",
        "short": "Comet client",
        "api": "`cometctl bench --api client`: TopicProducer.send_nowait per record "
        "(batches of 5,000) / group Consumer.batches(), every record decoded",
        "durability": "acks=1, fsync before the ack (group commit, `--flush-policy batch`)",
        "color": "#6f9be0",
    },
    "nats": {
        "label": "NATS JetStream",
        "short": "NATS",
        "api": "nats-py: `js.publish_async` per message, up to 8,000 unacknowledged / durable "
        "pull consumer (AckPolicy NONE), `fetch` of 1,000",
        "durability": "file storage, PubAck after the write, fsync on the server's default "
        "background sync interval (not per message)",
        "color": "#2e9e5b",
    },
    "redis": {
        "label": "Redis Streams",
        "short": "Redis",
        "api": "redis-py + hiredis: XADD in pipelines of 1,000 / XREADGROUP NOACK COUNT 1,000",
        "durability": "AOF `appendfsync everysec`: reply before fsync, fsync once a second",
        "color": "#c0392b",
    },
}
TIMES = "\u00d7"  # the multiplication sign
COMET = ("comet-raw", "comet-client")
PEERS = ("nats", "redis")
PHASES = ("produce", "consume")


def machine_description() -> dict[str, str]:
    """nproc, CPU model, memory, kernel and Python of this machine."""
    cpu = "unknown"
    mem_kb = 0
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


def _index(results: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (r["system"], r["workload"], r["phase"]): r
        for r in results
        if r.get("kind") == "PhaseResult"
    }


def _workloads(run: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(name, intended records, size) of every workload of a run, in order."""
    if run.get("workloads"):
        return [(w["name"], w["count"], w["size"]) for w in run["workloads"]]
    seen: dict[str, tuple[str, int, int]] = {}
    for r in run["results"]:
        if r.get("kind") == "PhaseResult" and r["workload"] not in seen:
            seen[r["workload"]] = (r["workload"], r["records"], r["size"])
    return list(seen.values())


def ratio(comet: float | None, peer: float | None) -> str:
    """Comet / peer as '12.3x' with a multiplication sign ('—' when a side is missing or 0)."""
    if not comet or not peer:
        return "—"
    value = comet / peer
    return f"{value:,.0f}{TIMES}" if value >= 100 else f"{value:.1f}{TIMES}"


def fmt_rate(r: dict[str, Any] | None) -> str:
    """'1,234,567 /s · 123.5 MB/s' for a phase result ('—' if absent; † if cut short)."""
    if r is None:
        return "—"
    mark = "" if r.get("complete", True) else " †"
    return f"{r['records_per_s']:,.0f} /s · {r['mb_per_s']:,.1f} MB/s{mark}"


def workload_label(name: str, records: int, size: int) -> str:
    """'1,000,000 x 100 B' (with a multiplication sign) for a workload."""
    unit = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
    return f"{records:,} {TIMES} {unit}"


def markdown(run: dict[str, Any]) -> str:
    """The whole report of a run as Markdown."""
    results: list[dict[str, Any]] = run["results"]
    index = _index(results)
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    lines: list[str] = [
        f"# Comet, NATS JetStream and Redis Streams side by side ({run['started']})"
    ]
    m = run["machine"]
    lines += [
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']}, "
        f"Python {m['python']}. One server at a time on 127.0.0.1, one client process."
        + (f" Load average at the start: {m['load']}." if m.get("load") else ""),
        "",
        f"Command: `{run['command']}` (scale {run['scale']:g})",
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in run.get("versions", {}).items()),
        "",
        "## Systems, APIs and durability",
        "",
        "| system | how it is driven | durability of an acknowledged record |",
        "|---|---|---|",
    ]
    for s in systems:
        info = SYSTEMS[s]
        lines.append(f"| {info['label']} | {info['api']} | {info['durability']} |")

    lines += ["", "## Throughput", ""]
    lines.append("| workload | phase | " + " | ".join(SYSTEMS[s]["label"] for s in systems) + " |")
    lines.append("|---|---|" + "---:|" * len(systems))
    for name, records, size in _workloads(run):
        for phase in PHASES:
            cells = [fmt_rate(index.get((s, name, phase))) for s in systems]
            label = workload_label(name, records, size)
            lines.append(f"| {label} | {phase} | " + " | ".join(cells) + " |")
    if any(not r.get("complete", True) for r in index.values()):
        lines += ["", "† stopped by its time bound before the full count; rate of what it did."]

    pairs = [(c, p) for c in COMET if c in systems for p in PEERS if p in systems]
    if pairs:
        lines += ["", "## Comet / peer (records/s)", ""]
        header = [f"{SYSTEMS[c]['short']} / {SYSTEMS[p]['short']}" for c, p in pairs]
        lines.append("| workload | phase | " + " | ".join(header) + " |")
        lines.append("|---|---|" + "---:|" * len(pairs))
        for name, records, size in _workloads(run):
            for phase in PHASES:
                cells = []
                for c, p in pairs:
                    cr, pr = index.get((c, name, phase)), index.get((p, name, phase))
                    cells.append(ratio(cr and cr["records_per_s"], pr and pr["records_per_s"]))
                label = workload_label(name, records, size)
                lines.append(f"| {label} | {phase} | " + " | ".join(cells) + " |")

    latencies = [r for r in results if r.get("kind") == "LatencyResult"]
    if latencies:
        rate = latencies[0]["rate"]
        lines += [
            "",
            f"## Single-record produce latency (send → ack, 100 B, {rate:,} records/s)",
            "",
            "One record per call through an asyncio client. Calls start on a fixed schedule "
            "whether or not earlier ones have been acknowledged (open loop); latency is each "
            "call's start to its acknowledgement. Late sends: calls that started more than one "
            "interval behind schedule.",
            "",
            "| system | call | records | p50 ms | p99 ms | max ms | max in flight | late sends |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        order = {s: i for i, s in enumerate(SYSTEMS)}
        for r in sorted(latencies, key=lambda r: order.get(r["system"], 99)):
            label = SYSTEMS.get(r["system"], {"label": r["system"]})["label"]
            lines.append(
                f"| {label} | `{r['notes'].get('call', '')}` | {r['records']:,} | "
                f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.3f} | "
                f"{r.get('max_in_flight', 1)} | {r['late_sends']} |"
            )

    lines += [
        "",
        "## CPU seconds per phase (client / server)",
        "",
        "| workload | phase | " + " | ".join(SYSTEMS[s]["label"] for s in systems) + " |",
        "|---|---|" + "---:|" * len(systems),
    ]
    for name, records, size in _workloads(run):
        for phase in PHASES:
            cells = []
            for s in systems:
                r = index.get((s, name, phase))
                if r is None:
                    cells.append("—")
                    continue
                client = "?" if r.get("client_cpu_s") is None else f"{r['client_cpu_s']:.2f}"
                server = "?" if r.get("server_cpu_s") is None else f"{r['server_cpu_s']:.2f}"
                cells.append(f"{client} / {server}")
            label = workload_label(name, records, size)
            lines.append(f"| {label} | {phase} | " + " | ".join(cells) + " |")
    if run.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e}" for e in run["errors"]]
    return "\n".join(lines) + "\n"


def _human(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


def write_chart(run: dict[str, Any], path: Path) -> Path:
    """Bar charts of records/s per workload and phase, latency, and ratios, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: list[dict[str, Any]] = run["results"]
    index = _index(results)
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    colors = [SYSTEMS[s]["color"] for s in systems]
    labels = [SYSTEMS[s]["short"] for s in systems]
    wls = _workloads(run)[:2]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    fig.suptitle(
        f"Comet vs NATS JetStream vs Redis Streams through Python clients — {run['started']}\n"
        f"{run['machine']['nproc']} CPUs ({run['machine']['cpu']}), "
        f"Python {run['machine']['python']}, scale {run['scale']:g}"
        + (
            f", load average at start {run['machine']['load']}"
            if run["machine"].get("load")
            else ""
        ),
        fontsize=13,
    )
    for row, (name, records, size) in enumerate(wls):
        for col, phase in enumerate(PHASES):
            ax = axes[row][col]
            values = [
                (index.get((s, name, phase)) or {}).get("records_per_s", 0.0) for s in systems
            ]
            bars = ax.bar(labels, values, color=colors)
            top = max(values) if any(values) else 1.0
            for bar, s, v in zip(bars, systems, values, strict=True):
                mbps = (index.get((s, name, phase)) or {}).get("mb_per_s", 0.0)
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    v + top * 0.01,
                    f"{_human(v)}/s\n{mbps:.0f} MB/s",
                    ha="center",
                    va="bottom",
                    fontsize=9,
                )
            ax.set_ylim(0, top * 1.22)
            ax.set_title(f"{phase}, {workload_label(name, records, size)}")
            ax.set_ylabel("records/s")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _pos: _human(x)))
            ax.tick_params(axis="x", labelsize=9)
    for row in range(len(wls), 2):
        for col in range(2):
            axes[row][col].axis("off")

    ax = axes[0][2]
    lat = {r["system"]: r for r in results if r.get("kind") == "LatencyResult"}
    lat_systems = [s for s in systems if s in lat]
    if lat_systems:
        xs = range(len(lat_systems))
        width = 0.38
        p50 = [lat[s]["p50_ms"] for s in lat_systems]
        p99 = [lat[s]["p99_ms"] for s in lat_systems]
        b1 = ax.bar([x - width / 2 for x in xs], p50, width, label="p50", color="#888888")
        b2 = ax.bar([x + width / 2 for x in xs], p99, width, label="p99", color="#333333")
        for bar, v in [*zip(b1, p50, strict=True), *zip(b2, p99, strict=True)]:
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                v,
                f"{v:.2f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(list(xs), [SYSTEMS[s]["short"] for s in lat_systems], fontsize=9)
        ax.set_ylabel("ms")
        ax.set_ylim(0, max(p99) * 1.2)
        ax.set_title(f"produce latency send→ack, {lat[lat_systems[0]]['rate']:,}/s")
        ax.legend()
    else:
        ax.axis("off")

    ax = axes[1][2]
    pairs = [(c, p) for c in COMET if c in systems for p in PEERS if p in systems]
    groups = [(name, phase) for name, _r, _s in wls for phase in PHASES]
    if pairs and groups:
        width = 0.8 / len(pairs)
        shown: list[float] = []
        for i, (c, p) in enumerate(pairs):
            vals = []
            for name, phase in groups:
                cr, pr = index.get((c, name, phase)), index.get((p, name, phase))
                ok = cr and pr and pr["records_per_s"]
                vals.append(cr["records_per_s"] / pr["records_per_s"] if ok else 0.0)
            shown += [v for v in vals if v > 0]
            xs = [g + (i - (len(pairs) - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(
                xs,
                vals,
                width,
                label=f"{SYSTEMS[c]['short']} / {SYSTEMS[p]['short']}",
                color=SYSTEMS[p]["color"],
                alpha=1.0 if c == "comet-raw" else 0.5,
                edgecolor=SYSTEMS[c]["color"],
            )
            for bar, v in zip(bars, vals, strict=True):
                if v > 0:
                    ax.text(
                        bar.get_x() + bar.get_width() / 2,
                        v,
                        f"{v:.1f}" if v < 10 else f"{v:.0f}",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:g}{TIMES}")
        )
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if shown:
            ax.set_ylim(min(min(shown), 1.0) * 0.5, max(shown) * 8)
        ax.set_xticks(range(len(groups)), [f"{n}\n{ph}" for n, ph in groups], fontsize=9)
        ax.set_ylabel("Comet / peer (log scale)")
        ax.set_title("Comet / peer, records/s")
        ax.legend(fontsize=8, ncol=2, loc="upper right")
    else:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(run: dict[str, Any], base: Path) -> tuple[Path, Path, Path]:
    """Write base.json, base.md and base.png; return their paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path = base.with_suffix(".json")
    md_path = base.with_suffix(".md")
    png_path = base.with_suffix(".png")
    json_path.write_text(json.dumps(run, indent=2) + "\n")
    md = markdown(run)
    md += f"\n![chart]({png_path.name})\n"
    md_path.write_text(md)
    write_chart(run, png_path)
    return json_path, md_path, png_path


def main(argv: list[str] | None = None) -> None:
    """Regenerate the Markdown and PNG of a saved run."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m bench.report RESULTS.json")
    path = Path(args[0])
    run = json.loads(path.read_text())
    _, md_path, png_path = write_report(run, path.with_suffix(""))
    sys.stdout.write(md_path.read_text())
    sys.stdout.write(f"\nwrote {md_path} and {png_path}\n")


if __name__ == "__main__":
    main()
