"""PartitionLog against an in-memory model: appends, reads, rolls, retention, restarts, torn
tails and truncation in random order."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from comet.records import RecordBatchBuilder, decode_batches, validate_batches
from comet.storage import LogConfig, PartitionLog

from .support import DEFAULT_TS, batch_headers

CONFIG = LogConfig(segment_bytes=1024, index_interval_bytes=150)


@dataclass
class ModelBatch:
    base_offset: int
    records: list[tuple[bytes, bytes]]
    size: int
    max_timestamp: int

    @property
    def next_offset(self) -> int:
        return self.base_offset + len(self.records)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="comet-log-sm-"))
        self.directory = self.root / "topic" / "0"
        self.log = PartitionLog.open(self.directory, CONFIG, now_ms=lambda: DEFAULT_TS)
        self.batches: list[ModelBatch] = []
        self.start = 0
        self.counter = 0

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- model helpers ---------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self.batches[-1].next_offset if self.batches else self.start

    def model_records(self, offset: int) -> list[tuple[int, bytes, bytes]]:
        return [
            (batch.base_offset + i, key, value)
            for batch in self.batches
            for i, (key, value) in enumerate(batch.records)
            if batch.base_offset + i >= offset
        ]

    def drop_from(self, offset: int) -> None:
        """Drop the model batch containing `offset` and every later one."""
        self.batches = [b for b in self.batches if b.next_offset <= offset]

    def reopen(self) -> None:
        self.log = PartitionLog.open(self.directory, CONFIG, now_ms=lambda: DEFAULT_TS)

    # --- rules -------------------------------------------------------------------------------

    @rule(
        sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
        batches=st.integers(1, 3),
        epoch=st.integers(0, 5),
    )
    def append(self, sizes: list[int], batches: int, epoch: int) -> None:
        buf = bytearray()
        framed: list[tuple[list[tuple[bytes, bytes]], int]] = []
        for _ in range(batches):
            builder = RecordBatchBuilder()
            records = []
            for size in sizes:
                self.counter += 1
                key = b"key-%d" % self.counter
                value = (b"value-%d-" % self.counter * (size // 8 + 1))[:size]
                builder.append(key, value, timestamp_ms=DEFAULT_TS + self.counter)
                records.append((key, value))
            framed.append((records, DEFAULT_TS + self.counter))
            buf += builder.build()
        info = self.log.append(buf, validate_batches(buf), epoch)
        assert info.base_offset == self.end
        offset = self.end
        for (records, max_ts), header in zip(framed, validate_batches(buf), strict=True):
            self.batches.append(ModelBatch(offset, records, header.size, max_ts))
            offset += len(records)
        assert info.last_offset == offset - 1

    @rule(data=st.data(), max_bytes=st.integers(0, 2500), bounded=st.booleans())
    def read(self, data: st.DataObject, max_bytes: int, bounded: bool) -> None:
        offset = data.draw(st.integers(self.start, self.end), label="offset")
        max_offset = (
            data.draw(st.integers(offset, self.end), label="max_offset") if bounded else None
        )
        limit = self.end if max_offset is None else max_offset
        result = self.log.read(offset, max_bytes, max_offset)
        if offset >= limit:
            assert result.records == b""
            return
        headers = batch_headers(result.records)
        assert headers, f"nothing read at {offset} below {limit}"
        first = next(b for b in self.batches if b.next_offset > offset)
        assert headers[0].base_offset == first.base_offset == result.first_offset
        assert all(h.base_offset < limit for h in headers)
        assert len(headers) == 1 or len(result.records) <= max_bytes
        assert result.next_offset == headers[-1].next_offset
        got = [(r.offset, r.key, r.value) for r in decode_batches(result.records, offset)]
        expected = [r for r in self.model_records(offset) if r[0] < result.next_offset]
        assert got == expected

    @rule(data=st.data())
    def find_by_timestamp(self, data: st.DataObject) -> None:
        target = data.draw(st.integers(DEFAULT_TS, DEFAULT_TS + self.counter + 1), label="ts")
        expected = next((b.base_offset for b in self.batches if b.max_timestamp >= target), None)
        assert self.log.offset_for_timestamp(target) == expected

    @rule(retention_bytes=st.integers(0, 4000))
    def retain(self, retention_bytes: int) -> None:
        self.log.update_config(LogConfig(segment_bytes=1024, retention_bytes=retention_bytes))
        self.log.apply_retention()
        self.log.update_config(CONFIG)
        start = self.log.log_start_offset
        assert start in (self.start, self.end) or any(b.base_offset == start for b in self.batches)
        self.batches = [b for b in self.batches if b.base_offset >= start]
        self.start = start
        segments = sorted(self.directory.glob("*.log"))
        if len(segments) > 1:
            assert self.log.size_bytes - segments[0].stat().st_size < retention_bytes

    @rule()
    def restart(self) -> None:
        self.log.close()
        self.reopen()

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def tear_tail(self, data: st.DataObject) -> None:
        self.log.close()
        active = sorted(self.directory.glob("*.log"))[-1]
        active_base = int(active.stem)
        in_active = [b for b in self.batches if b.base_offset >= active_base]
        size = active.stat().st_size
        assert size == sum(b.size for b in in_active)
        if size:
            cut = data.draw(st.integers(1, size), label="cut")
            with open(active, "r+b") as f:
                f.truncate(size - cut)
            kept_bytes = 0
            for batch in in_active:
                kept_bytes += batch.size
                if kept_bytes > size - cut:
                    self.drop_from(batch.base_offset)
                    break
        self.reopen()

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(max(self.start - 3, 0), self.end + 2), label="offset")
        self.log.truncate_to(offset)
        if offset < self.start:
            self.batches = []
            self.start = offset
        elif offset < self.end:
            self.drop_from(offset)

    @rule()
    def flush(self) -> None:
        self.log.flush()
        assert self.log.flushed_offset == self.end

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def offsets_match_the_model(self) -> None:
        assert self.log.log_start_offset == self.start
        assert self.log.log_end_offset == self.end
        assert self.log.flushed_offset <= self.end
        assert self.log.size_bytes == sum(b.size for b in self.batches)


LogMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogStateMachine = LogMachine.TestCase
