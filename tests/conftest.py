"""Shared fixtures: one real broker per test module, unique topic names."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from comet.cli.local_broker import LocalBroker


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A `comet` process (single-broker mode) shared by the tests of one module.

    A module may set BROKER_ARGS = [...] to pass extra command-line flags.
    """
    extra = list(getattr(request.module, "BROKER_ARGS", []))
    root = tmp_path_factory.mktemp("broker")
    proc = LocalBroker(data_dir=root / "data", extra_args=extra, log_path=root / "broker.log")
    proc.start()
    yield proc
    still_running = proc.proc is not None and proc.proc.poll() is None
    code = proc.stop()
    assert still_running, f"broker died during the module:\n{proc.log_text()[-4000:]}"
    assert code == 0, f"broker exited with {code}:\n{proc.log_text()[-4000:]}"


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> Iterator[str]:
    """A topic name no other test uses (not created)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:180]
    yield f"{base}-{uuid.uuid4().hex[:8]}"
