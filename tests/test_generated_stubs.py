"""The committed protobuf stubs match proto/ (regenerate with `make proto`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py")


def test_stubs_are_generated_from_the_current_proto(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "proto/comet/v1/broker.proto"),
        ],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "comet/v1" / name).read_text()
        committed = (ROOT / "src/comet/v1" / name).read_text()
        assert fresh == committed, f"src/comet/v1/{name} is stale: run `make proto`"
