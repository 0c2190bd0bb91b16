"""deploy/Dockerfile read as instructions, and deploy/healthcheck.py against a real broker."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from comet.cli.local_broker import LocalBroker, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = " ".join((pending + line).split())
        pending = ""
        word, _, args = full.partition(" ")
        out.append((word.upper(), args))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_slim_python_base() -> None:
    """Every stage starts from python:3.11-slim."""
    steps = _instructions()
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in steps
    assert [a.split()[0] for w, a in steps if w == "FROM"] == ["${PYTHON_IMAGE}"] * 2


def test_runtime_stage() -> None:
    """Non-root user, /data volume, port 6174, gRPC health check, `comet` entrypoint."""
    final = dict(_final_stage())
    user = final["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert final["VOLUME"] == '["/data"]'
    assert final["EXPOSE"] == "6174"
    assert final["HEALTHCHECK"].endswith('CMD ["python", "/app/healthcheck.py"]')
    assert json.loads(final["ENTRYPOINT"]) == ["comet"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["comet"] == "comet.cli.broker:main"
    env = final["ENV"]
    for setting in ("COMET_ADDR=:6174", "COMET_DATA_DIR=/data", "PATH=/opt/venv/bin:$PATH"):
        assert setting in env.split()


def test_copies_exist_and_pass_the_dockerignore() -> None:
    """Every COPY from the context names a path that exists and is not ignored."""
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = []
    for word, args in _instructions():
        if word == "COPY" and "--from=" not in args:
            sources += [s for s in args.split()[:-1] if not s.startswith("--")]
    assert {"pyproject.toml", "README.md", "src", "examples", "deploy/healthcheck.py"} <= set(
        sources
    )
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is excluded by the .dockerignore"
    assert any(w == "RUN" and "pip install ." in a for w, a in _instructions())


def _healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COMET_HEALTHCHECK_TIMEOUT": "2", **(env or {})},
    )


@pytest.mark.integration
def test_healthcheck_script_against_a_broker(tmp_path: Path) -> None:
    """SERVING from a live broker exits 0 (by argument and by COMET_ADDR); nothing there exits 1."""
    with LocalBroker(data_dir=tmp_path / "data", log_path=tmp_path / "broker.log") as broker:
        ok = _healthcheck(broker.address)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.strip() == f"{broker.address}: SERVING"
        by_env = _healthcheck(env={"COMET_ADDR": f":{broker.port}"})
        assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    started = time.monotonic()
    down = _healthcheck(f"127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stdout or "DEADLINE_EXCEEDED" in down.stdout
    assert time.monotonic() - started < 15


def test_healthcheck_local_address() -> None:
    """A wildcard listen address is dialled on loopback; a specific one as it is."""
    spec = importlib.util.spec_from_file_location("comet_deploy_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.local_address(":6174") == "127.0.0.1:6174"
    assert healthcheck.local_address("0.0.0.0:7000") == "127.0.0.1:7000"
    assert healthcheck.local_address("[::]:7000") == "127.0.0.1:7000"
    assert healthcheck.local_address("10.1.2.3:6174") == "10.1.2.3:6174"
    with pytest.raises(ValueError):
        healthcheck.local_address("nohost")
