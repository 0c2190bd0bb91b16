"""The history of one fault run: every operation and fault as JSON lines.

Each line is one event with a `type` and `t`, seconds since the run
started (monotonic). The checker reads nothing else, so a saved history
file reproduces a verdict: `python -m tests.faults --check FILE`.

Event types (fields beyond `type` and `t`):

- `start`: wall_clock (UTC, ISO 8601, when t was 0), seed, duration,
  topic, partitions, and the run's settings;
- `fault` / `heal`: id, kind, target, detail (what was done, to whom);
- `send`: id, k (key), s (per-key sequence); the value is `id|k|s`;
- `ack`: id, p (partition), o (offset); `fail`: id, error; `refused`: id
  (the producer's buffer was full: never handed to the producer);
- `consume`: c (consumer), p, recs ([offset, value], ...);
- `committed`: p, o (the group's committed offset as the monitor read it);
- `final`: p, hw, recs ([offset, value], ...) (the read after healing);
- `converged`: ok, detail (whether the cluster healed fully in time);
- `replica`: b (broker), p, end, count, digest (`replica_digest` of its
  records below the final high watermark, read from its data directory
  after the brokers stopped);
- `end`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def encode_value(record_id: str, key: str, seq: int) -> bytes:
    """The value written for one record: unique, and naming its key and sequence."""
    return f"{record_id}|{key}|{seq}".encode()


def replica_digest(records: Iterable[tuple[int, str]]) -> str:
    """A digest of (offset, value) records, to compare replicas without storing them."""
    digest = hashlib.sha256()
    for offset, value in records:
        digest.update(f"{offset}:{value}\n".encode())
    return digest.hexdigest()


def decode_value(value: str) -> tuple[str, str, int] | None:
    """(id, key, seq) of a value written by the workload, or None for anything else."""
    parts = value.split("|")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class History:
    """Appends events to a JSON lines file (buffered; `close` flushes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._t0 = time.monotonic()

    def now(self) -> float:
        """Seconds since the history was opened."""
        return time.monotonic() - self._t0

    def record(self, event_type: str, **fields: Any) -> None:
        """Append one event stamped with the current time."""
        fields["type"] = event_type
        fields["t"] = round(self.now(), 4)
        self._file.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Write buffered events to the file."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file; idempotent."""
        if not self._file.closed:
            self._file.close()


def read_history(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of a history file, in order (a torn last line is skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise
