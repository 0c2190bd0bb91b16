"""`cometctl` end to end: the installed command as a subprocess against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from comet.cli.local_broker import free_port
from comet.client import CometClient
from comet.records import encode_batch

CTL = Path(sys.executable).parent / "cometctl"
# Wide enough that rich never wraps or elides a cell of the tables.
ENV = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}


def ctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CTL), "--bootstrap", address, "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


def ok(address: str, *args: str) -> str:
    done = ctl(address, *args)
    assert done.returncode == 0, f"cometctl {' '.join(args)}: {done.stderr}"
    return done.stdout


def fails(address: str, *args: str) -> str:
    """Run a command that must fail: exit != 0, nothing on stdout, one error line on stderr."""
    done = ctl(address, *args)
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cometctl: error: "), lines[0]
    return lines[0]


@pytest.fixture
def name() -> str:
    """A short unique topic name (short keeps table rows readable)."""
    return f"ctl-{uuid.uuid4().hex[:10]}"


def test_entry_point_installed():
    assert CTL.exists(), f"{CTL} missing: is the package installed in the venv?"
    done = subprocess.run([str(CTL), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("topic", "cluster"):
        assert command in done.stdout


def test_topic_lifecycle_tables(broker, name):
    addr = broker.address
    assert ok(addr, "topic", "create", name, "--partitions", "3").strip() == f"created topic {name}"
    rows = [line for line in ok(addr, "topic", "list").splitlines() if name in line]
    assert len(rows) == 1
    assert [cell for cell in rows[0].replace("│", " ").split()] == [name, "3", "1"]

    with CometClient(addr) as client:
        client.produce_batch(name, 2, encode_batch([(None, b"a"), (None, b"b")]), acks=1)
        me = client.metadata().brokers[0].id
    described = ok(addr, "topic", "describe", name)
    assert f"{name} (replication factor 1)" in described
    part_rows = [line.replace("│", " ").split() for line in described.splitlines() if me in line]
    # partition, leader, replicas, isr, start, end, high watermark, size, segments
    assert [row[0] for row in part_rows] == ["0", "1", "2"]
    assert part_rows[2][1:7] == [me, me, me, "0", "2", "2"]
    assert part_rows[0][4:7] == ["0", "0", "0"]
    assert "retention.ms" in described
    assert "flush.policy" in described

    assert ok(addr, "topic", "delete", name).strip() == f"deleted topic {name}"
    assert name not in ok(addr, "topic", "list")


def test_topic_lifecycle_json(broker, name):
    addr = broker.address
    created = json.loads(
        ok(addr, "--json", "topic", "create", name, "-p", "2", "-c", "retention.ms=60000")
    )
    assert created == {"topic": name, "created": True}
    again = json.loads(ok(addr, "--json", "topic", "create", name, "-p", "2", "--if-not-exists"))
    assert again == {"topic": name, "created": False}

    listed = json.loads(ok(addr, "--json", "topic", "list"))
    assert {"name": name, "partitions": 2, "replication_factor": 1} in listed
    assert [t["name"] for t in listed] == sorted(t["name"] for t in listed)

    with CometClient(addr) as client:
        client.produce_batch(name, 1, encode_batch([(None, b"x")] * 3), acks=1)
    desc = json.loads(ok(addr, "--json", "topic", "describe", name))
    assert desc["name"] == name
    assert desc["replication_factor"] == 1
    assert desc["config"]["retention.ms"] == "60000"
    assert [p["id"] for p in desc["partitions"]] == [0, 1]
    p1 = desc["partitions"][1]
    assert p1["leader"] and p1["replicas"] == [p1["leader"]] and p1["isr"] == [p1["leader"]]
    assert (p1["log_start_offset"], p1["log_end_offset"], p1["high_watermark"]) == (0, 3, 3)
    assert p1["size_bytes"] > 0 and p1["segment_count"] == 1
    assert desc["partitions"][0]["log_end_offset"] == 0

    assert json.loads(ok(addr, "--json", "topic", "delete", name)) == {
        "topic": name,
        "deleted": True,
    }
    assert name not in [t["name"] for t in json.loads(ok(addr, "--json", "topic", "list"))]


def test_errors_are_one_line_and_non_zero(broker, name):
    addr = broker.address
    ok(addr, "topic", "create", name)
    missing = name + "-missing"
    cases = [
        (addr, ["topic", "delete", missing], [missing, "does not exist"]),
        (addr, ["topic", "describe", missing], [missing, "does not exist"]),
        (addr, ["topic", "create", missing, "-c", "no.such.key=1"], ["no.such.key"]),
        (addr, ["topic", "create", missing, "-c", "retention.ms"], ["KEY=VALUE"]),
        (addr, ["topic", "create", "a/b"], ["a/b"]),
        (addr, ["topic", "create", name], [name, "already exists"]),
        (f"127.0.0.1:{free_port()}", ["topic", "list"], ["no bootstrap broker reachable"]),
        ("host:notaport", ["topic", "list"], ["port"]),
    ]
    # independent invocations: run them side by side to keep the test short
    with ThreadPoolExecutor(max_workers=4) as pool:
        lines = list(pool.map(lambda case: fails(case[0], *case[1]), cases))
    for (_, args, expected), line in zip(cases, lines, strict=True):
        for text in expected:
            assert text in line, (args, line)
    assert missing not in ok(addr, "topic", "list")


def test_cluster(broker, name):
    addr = broker.address
    ok(addr, "topic", "create", name, "-p", "2")
    data = json.loads(ok(addr, "--json", "cluster"))
    assert data["cluster_id"]
    assert data["controller_id"] is None
    (me,) = data["brokers"]
    assert me["address"] == addr and me["id"]
    assert data["topics"][name] == [
        {"partition": i, "leader": me["id"], "replicas": [me["id"]], "isr": [me["id"]]}
        for i in range(2)
    ]
    table = ok(addr, "cluster")
    assert me["id"] in table and addr in table and name in table
