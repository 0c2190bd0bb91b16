"""`cometctl produce`, `consume` and `group` end to end against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from comet.cli.local_broker import LocalBroker
from comet.client import CometClient

CTL = Path(sys.executable).parent / "cometctl"
ENV = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}


def ctl(
    address: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(CTL), "--bootstrap", address, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    if check:
        assert done.returncode == 0, f"cometctl {' '.join(args)}: {done.stderr}"
    return done


def test_produce_lines_then_consume_them(broker: LocalBroker, topic: str) -> None:
    lines = "".join(f"line {i}\n" for i in range(25))
    done = ctl(broker.address, "produce", topic, "-p", "2", stdin=lines)
    assert "25 records sent" in done.stderr
    out = ctl(
        broker.address, "consume", topic, "--from-beginning", "--max", "25", "--idle-timeout", "5"
    ).stdout
    assert sorted(out.splitlines(), key=lambda s: int(s.split()[1])) == [
        f"line {i}" for i in range(25)
    ]


def test_keyed_produce_and_json_consume(broker: LocalBroker, topic: str) -> None:
    ctl(broker.address, "produce", topic, "-K", ":", "-p", "3", stdin="a:1\nb:2\na:3\nnokey\n")
    out = ctl(
        broker.address,
        "consume",
        topic,
        "--from-beginning",
        "--max",
        "4",
        "--format",
        "json",
        "--idle-timeout",
        "5",
    ).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted((r["key"], r["value"]) for r in records if r["key"]) == [
        ("a", "1"),
        ("a", "3"),
        ("b", "2"),
    ]
    assert [r["value"] for r in records if r["key"] is None] == ["nokey"]
    a_partitions = {r["partition"] for r in records if r["key"] == "a"}
    assert len(a_partitions) == 1  # same key, same partition
    assert all(r["topic"] == topic and r["timestamp"] > 0 for r in records)


def test_group_consume_commits_and_group_commands_show_lag(broker: LocalBroker, topic: str) -> None:
    group = f"g-{topic}"
    ctl(broker.address, "produce", topic, stdin="".join(f"{i}\n" for i in range(10)))
    first = ctl(
        broker.address,
        "consume",
        topic,
        "--group",
        group,
        "--from-beginning",
        "--max",
        "6",
        "--idle-timeout",
        "5",
    ).stdout.split()
    assert first == [str(i) for i in range(6)]
    with CometClient(broker.address) as client:
        assert client.fetch_offsets(group, {topic: [0]})[(topic, 0)] == 6
    described = json.loads(ctl(broker.address, "--json", "group", "describe", group).stdout)
    assert described["group"] == group
    assert described["offsets"] == [
        {"topic": topic, "partition": 0, "committed": 6, "log_end_offset": 10, "lag": 4}
    ]
    listed = json.loads(ctl(broker.address, "--json", "group", "list").stdout)
    assert group in {g["group"] for g in listed}
    table = ctl(broker.address, "group", "describe", group).stdout
    assert topic in table and "lag" in table
    rest = ctl(
        broker.address, "consume", topic, "--group", group, "--max", "4", "--idle-timeout", "5"
    ).stdout.split()
    assert rest == ["6", "7", "8", "9"]  # the group resumes where it committed


def test_consume_of_an_unknown_topic_is_one_clear_error(broker: LocalBroker) -> None:
    done = ctl(broker.address, "consume", "no-such-topic", "--max", "1", check=False)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("cometctl: error:")
    assert "no-such-topic" in done.stderr
