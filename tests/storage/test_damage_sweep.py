"""Damage at every position of a small log: the log opens and serves only what was written.

A template log of three segments (two sealed, one active) with offset and
time indexes and a leader-epoch checkpoint is damaged one way at a time:
each file truncated at, and bit-flipped at, every position of a
deterministic sample (every byte of the index and checkpoint files; every
batch header byte, the bytes around every batch boundary and a stride
through record bodies of the segment files). After each, PartitionLog.open
must succeed and:

- serve only CRC-valid batches holding exactly the records written at
  their offsets; a read either returns the batch holding the offset asked
  for or raises CorruptRecordError (DATA_LOSS), never a later batch;
- lose nothing that lies before the damage, nor any other segment;
- rebuild indexes and the checkpoint so that timestamp lookups and leader
  epochs are what they were;
- after damage to the active segment, take new appends that survive a
  reopen.

The sweep runs on a tmpfs (/dev/shm) when there is one: it opens the log a
few thousand times.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from comet.records import BATCH_HEADER_SIZE, Record, decode_batches, validate_batches
from comet.storage import (
    CorruptRecordError,
    LogConfig,
    OffsetOutOfRangeError,
    PartitionLog,
)
from comet.storage.leader_epoch import CHECKPOINT_FILE

from .support import batch_headers, produce

CONFIG = LogConfig(segment_bytes=1024, index_interval_bytes=150)
BATCHES = 20
BODY_STRIDE = 5
EPOCH_FIELD = range(12, 16)  # partition_leader_epoch: stamped by the broker, outside the CRC
READ_ALL = 1 << 20


@dataclass(frozen=True)
class StoredBatch:
    """One batch of the template: file, position, size, offsets, timestamp."""

    segment: str
    position: int
    size: int
    base_offset: int
    next_offset: int
    max_timestamp: int


@dataclass
class Template:
    """The undamaged log: its files, batches, records and lookups."""

    files: dict[str, bytes]
    batches: list[StoredBatch]
    records: dict[int, Record]
    end: int
    epochs: list[tuple[int, int]]
    timestamp_answers: dict[int, int | None]

    def segments(self) -> list[str]:
        return sorted(name for name in self.files if name.endswith(".log"))

    def in_segment(self, segment: str) -> list[StoredBatch]:
        return [b for b in self.batches if b.segment == segment]


def sweep_root() -> Path:
    """A tmpfs directory when the machine has one, else the system temp directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


@pytest.fixture(scope="module")
def template() -> Iterator[tuple[Path, Template]]:
    root = Path(tempfile.mkdtemp(prefix="comet-sweep-", dir=sweep_root()))
    directory = root / "p"
    with capture_logs():
        plog = PartitionLog.open(directory, CONFIG)
        for i in range(BATCHES):
            produce(
                plog,
                records=1 + i % 3,
                value_size=12 + 9 * (i % 4),
                tag=i,
                timestamp_ms=1_000 + 10 * i,
                leader_epoch=i // 7,
            )
        plog.close()
        files = {p.name: p.read_bytes() for p in directory.iterdir()}
        batches = []
        for name in sorted(n for n in files if n.endswith(".log")):
            position = 0
            for header in batch_headers(files[name]):
                batches.append(
                    StoredBatch(
                        name,
                        position,
                        header.size,
                        header.base_offset,
                        header.next_offset,
                        header.max_timestamp,
                    )
                )
                position += header.size
        plog = PartitionLog.open(directory, CONFIG)
        records = {}
        for batch in batches:
            result = plog.read(batch.base_offset, READ_ALL)
            for record in decode_batches(result.records):
                records[record.offset] = record
        probes = sorted({t + d for b in batches for t in [b.max_timestamp] for d in (-1, 0, 1)})
        answers = {t: plog.offset_for_timestamp(t) for t in [0, *probes, 10**6]}
        epochs = plog.leader_epochs.entries
        end = plog.log_end_offset
        plog.close()
    assert len([n for n in files if n.endswith(".log")]) >= 3, sorted(files)
    assert len(epochs) >= 3, epochs
    assert all(files[n] for n in files if n.endswith(".index")), "every index must have entries"
    yield directory, Template(files, batches, records, end, epochs, answers)
    shutil.rmtree(root, ignore_errors=True)


def restore(directory: Path, template: Template) -> None:
    """Put every file of the template back and remove any other file."""
    for path in directory.iterdir():
        if path.name not in template.files:
            path.unlink()
    for name, data in template.files.items():
        path = directory / name
        try:
            unchanged = path.read_bytes() == data
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            path.write_bytes(data)


def truncate(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(position)


def flip(path: Path, position: int) -> None:
    """Flip one bit of the byte at `position`, a different bit for neighbouring positions."""
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << (position % 8)
    path.write_bytes(data)


def log_positions(batches: list[StoredBatch]) -> list[int]:
    """Every header byte, the bytes around each boundary, and a stride through bodies."""
    positions: set[int] = set()
    for batch in batches:
        start, end = batch.position, batch.position + batch.size
        positions.update(range(start, start + BATCH_HEADER_SIZE))
        positions.update(range(start + BATCH_HEADER_SIZE, end, BODY_STRIDE))
        positions.update((end - 2, end - 1))
    return sorted(positions)


def damaged_batch(batches: list[StoredBatch], position: int) -> StoredBatch:
    """The batch holding byte `position` of its segment."""
    return next(b for b in batches if b.position <= position < b.position + b.size)


Damage = Callable[[Path, int], None]


def check_reads(
    plog: PartitionLog, template: Template, intact: Callable[[StoredBatch], bool], what: str
) -> None:
    """Intact batches are served as written; others are served as written or refused."""
    for batch in template.batches:
        try:
            result = plog.read(batch.base_offset, READ_ALL)
        except (CorruptRecordError, OffsetOutOfRangeError) as exc:
            assert not intact(batch), f"{what}: intact batch at {batch.base_offset} lost: {exc}"
            continue
        if not result.records:
            assert not intact(batch), f"{what}: intact batch at {batch.base_offset} not served"
            assert batch.base_offset >= plog.log_end_offset, what
            continue
        assert result.first_offset == batch.base_offset < result.next_offset, (
            f"{what}: read at {batch.base_offset} returned [{result.first_offset}, "
            f"{result.next_offset}): offsets were skipped"
        )
        validate_batches(result.records, producer=False)
        served = list(decode_batches(result.records))
        assert served == [template.records[r.offset] for r in served], f"{what}: wrong records"
    list(plog.iter_batch_headers())  # the producer-state rebuild scan stops, never raises


def check_appends_survive_reopen(directory: Path, plog: PartitionLog, what: str) -> None:
    end = plog.log_end_offset
    info = produce(plog, records=2, tag=999, timestamp_ms=5_000)
    assert info.base_offset == end, what
    plog.close()
    again = PartitionLog.open(directory, CONFIG)
    try:
        assert again.log_end_offset == end + 2, what
        records = list(decode_batches(again.read(end, READ_ALL).records))
        assert [r.key for r in records] == [b"k999-0", b"k999-1"], what
    finally:
        again.close()


@pytest.mark.parametrize("kind", ["truncate", "flip"])
def test_segment_damage_at_every_sampled_position(template, kind):
    directory, tmpl = template
    damage: Damage = truncate if kind == "truncate" else flip
    active = tmpl.segments()[-1]
    cases = 0
    with capture_logs():
        for segment in tmpl.segments():
            batches = tmpl.in_segment(segment)
            for position in log_positions(batches):
                restore(directory, tmpl)
                damage(directory / segment, position)
                hit = damaged_batch(batches, position)
                what = f"{kind} {segment} at {position} (batch {hit.base_offset})"

                def intact(batch: StoredBatch, segment=segment, hit=hit) -> bool:
                    return batch.segment != segment or batch.base_offset < hit.base_offset

                # a flipped leader epoch is undetectable: the field is outside the CRC
                epoch_flip = kind == "flip" and position - hit.position in EPOCH_FIELD
                plog = PartitionLog.open(directory, CONFIG)
                try:
                    end = plog.log_end_offset
                    if segment == active:
                        assert hit.base_offset <= end <= tmpl.end, f"{what}: end {end}"
                        assert end in {b.base_offset for b in tmpl.batches} | {tmpl.end}, what
                    else:
                        assert end == tmpl.end, f"{what}: end {end}"
                    if not epoch_flip:
                        kept = [(e, s) for e, s in tmpl.epochs if s < end]
                        assert plog.leader_epochs.entries == kept, what
                    check_reads(plog, tmpl, intact, what)
                    if segment == active:
                        check_appends_survive_reopen(directory, plog, what)
                finally:
                    plog.close()
                cases += 1
    assert cases > 1000


INDEX_SUFFIXES = (".index", ".timeindex")


def index_files(tmpl: Template) -> list[str]:
    return sorted(n for n in tmpl.files if n.endswith(INDEX_SUFFIXES) and tmpl.files[n])


def check_undamaged_data(directory: Path, tmpl: Template, what: str) -> None:
    """Everything written is served as written and every lookup answers as before."""
    plog = PartitionLog.open(directory, CONFIG)
    try:
        assert plog.log_end_offset == tmpl.end, what
        check_reads(plog, tmpl, lambda batch: True, what)
        for timestamp, offset in tmpl.timestamp_answers.items():
            assert plog.offset_for_timestamp(timestamp) == offset, f"{what}: time {timestamp}"
        assert plog.leader_epochs.entries == tmpl.epochs, what
    finally:
        plog.close()


@pytest.mark.parametrize("kind", ["truncate", "flip"])
def test_index_damage_at_every_position(template, kind):
    directory, tmpl = template
    damage: Damage = truncate if kind == "truncate" else flip
    cases = 0
    with capture_logs():
        for name in index_files(tmpl):
            for position in range(len(tmpl.files[name])):
                restore(directory, tmpl)
                damage(directory / name, position)
                check_undamaged_data(directory, tmpl, f"{kind} {name} at {position}")
                cases += 1
    assert cases > 100


def test_missing_index_files_are_rebuilt(template):
    directory, tmpl = template
    cases = 0
    with capture_logs():
        for segment in tmpl.segments():
            stem = segment.removesuffix(".log")
            for missing in ([".index"], [".timeindex"], [".index", ".timeindex"]):
                restore(directory, tmpl)
                for suffix in missing:
                    (directory / (stem + suffix)).unlink()
                check_undamaged_data(directory, tmpl, f"{stem} without {missing}")
                for suffix in missing:
                    assert (directory / (stem + suffix)).exists(), f"{stem}{suffix} not rebuilt"
                cases += 1


def stale_checkpoints(tmpl: Template) -> dict[str, str]:
    """Checkpoints that parse but do not describe the log."""
    entries = tmpl.epochs

    def text(items: list[tuple[int, int]]) -> str:
        return "\n".join(["0", str(len(items)), *(f"{e} {s}" for e, s in items)]) + "\n"

    (e1, s1), (e2, s2) = entries[1], entries[2]
    return {
        "missing": "",
        "empty": text([]),
        "older (last epoch missing)": text(entries[:-1]),
        "only the first epoch": text(entries[:1]),
        "epoch starting one batch late": text([*entries[:2], (e2, s2 + 1)]),
        "epoch starting early": text([entries[0], (e1, s1 - 1), *entries[2:]]),
        "unknown epoch": text([*entries[:2], (e2 + 5, s2)]),
        "future epoch past the end": text([*entries, (e2 + 1, tmpl.end + 10)]),
    }


def test_leader_epoch_checkpoint_damaged_or_stale_is_rebuilt(template):
    directory, tmpl = template
    original = tmpl.files[CHECKPOINT_FILE]
    cases = 0
    with capture_logs():
        for position in range(len(original)):
            for damage in (truncate, flip):
                restore(directory, tmpl)
                damage(directory / CHECKPOINT_FILE, position)
                check_undamaged_data(directory, tmpl, f"{damage.__name__} checkpoint at {position}")
                cases += 1
        for name, text in stale_checkpoints(tmpl).items():
            restore(directory, tmpl)
            path = directory / CHECKPOINT_FILE
            if name == "missing":
                path.unlink()
            else:
                path.write_text(text)
            check_undamaged_data(directory, tmpl, f"checkpoint {name}")
            assert path.read_bytes() == original, f"checkpoint {name} not rewritten"
            cases += 1


def test_a_wrong_index_entry_found_by_a_read_is_repaired_without_unsynced_entries(tmp_path):
    """The active segment: rebuilt entries reach the file only once their bytes are synced."""
    directory = tmp_path / "p"
    with capture_logs() as logs:
        plog = PartitionLog.open(directory, LogConfig(index_interval_bytes=100))
        for i in range(12):
            produce(plog, records=2, value_size=40, tag=i)
        plog.close()
        index = directory / "00000000000000000000.index"
        entries = bytearray(index.read_bytes())
        assert len(entries) >= 24
        position = int.from_bytes(entries[12:16])
        entries[12:16] = (position + 1).to_bytes(4)  # entry 1 points inside its batch
        index.write_bytes(entries)
        plog = PartitionLog.open(directory, LogConfig(index_interval_bytes=100))
        for i in range(12, 15):
            produce(plog, records=2, value_size=40, tag=i)  # appended, not synced
        unsynced_from = plog.flushed_offset
        assert unsynced_from < plog.log_end_offset
        for offset in range(plog.log_end_offset):
            record = next(decode_batches(plog.read(offset, READ_ALL).records, offset))
            assert record.offset == offset
        assert [e["event"] for e in logs].count("segment.index_rebuilt") == 1
        on_disk = index.read_bytes()
        assert len(on_disk) < len(entries), "entries of unsynced bytes were written"
        plog.flush()
        plog.close()
        rebuilt = index.read_bytes()
    data = (directory / "00000000000000000000.log").read_bytes()
    for i in range(0, len(rebuilt), 8):
        rel, pos = int.from_bytes(rebuilt[i : i + 4]), int.from_bytes(rebuilt[i + 4 : i + 8])
        assert batch_headers(data[pos:])[0].base_offset == rel
