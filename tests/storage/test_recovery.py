import shutil
import struct
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from comet.records import decode_batches
from comet.storage import CorruptRecordError, LogConfig, PartitionLog

from .support import batch_headers, produce, read_all

CONFIG = LogConfig(segment_bytes=2048, index_interval_bytes=200)


def build(directory: Path, batches: int = 24) -> list:
    """A closed log of several segments; return its records."""
    plog = PartitionLog.open(directory, CONFIG)
    for i in range(batches):
        produce(plog, records=1 + i % 3, value_size=40 + 7 * i, tag=i, timestamp_ms=1000 + i)
    records = read_all(plog)
    plog.close()
    return records


def active_log(directory: Path) -> Path:
    return sorted(directory.glob("*.log"))[-1]


def sealed_logs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))[:-1]


def last_batch(directory: Path) -> tuple[int, int, int]:
    """(position, size, base_offset) of the last batch of the active segment."""
    data = active_log(directory).read_bytes()
    pos = 0
    headers = batch_headers(data)
    for header in headers[:-1]:
        pos += header.size
    return pos, headers[-1].size, headers[-1].base_offset


def flip(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x40]))


def reopen(directory: Path) -> PartitionLog:
    return PartitionLog.open(directory, CONFIG)


@pytest.fixture
def template(tmp_path):
    directory = tmp_path / "template"
    records = build(directory)
    return directory, records


def copy(template, tmp_path, name):
    directory = tmp_path / name
    shutil.copytree(template[0], directory)
    return directory


# --- the active segment's tail --------------------------------------------------------------


def test_torn_tail_at_every_position_of_the_last_batch(template, tmp_path):
    directory, records = template
    pos, size, base = last_batch(directory)
    kept = [r for r in records if r.offset < base]
    for cut in [*range(1, 70, 3), *range(70, size, 37), size - 1]:
        case = copy(template, tmp_path, f"cut{cut}")
        with open(active_log(case), "r+b") as f:
            f.truncate(pos + size - cut)
        with capture_logs() as logs:
            plog = reopen(case)
        assert plog.log_end_offset == base, cut
        assert read_all(plog) == kept
        truncated = [e for e in logs if e["event"] == "segment.truncated"]
        assert truncated[0]["valid_bytes"] == pos
        assert truncated[0]["dropped_bytes"] == size - cut
        assert truncated[0]["file"] == str(active_log(case))
        assert produce(plog, tag=500).base_offset == base
        plog.close()


def test_bit_flip_in_the_last_batch_drops_it(template, tmp_path):
    case = copy(template, tmp_path, "flip")
    pos, size, base = last_batch(case)
    flip(active_log(case), pos + size - 3)
    plog = reopen(case)
    assert plog.log_end_offset == base
    assert read_all(plog) == [r for r in template[1] if r.offset < base]
    plog.close()


def test_bad_offset_in_the_last_batch_drops_it(template, tmp_path):
    case = copy(template, tmp_path, "offset")
    pos, _, base = last_batch(case)
    with open(active_log(case), "r+b") as f:
        f.seek(pos)
        f.write(struct.pack(">q", base + 5))
    plog = reopen(case)
    assert plog.log_end_offset == base
    plog.close()


@pytest.mark.parametrize("garbage", [b"\x00" * 500, b"\xff" * 13, bytes(range(256)) * 3])
def test_garbage_after_the_last_batch_is_dropped(template, tmp_path, garbage):
    case = copy(template, tmp_path, "garbage")
    size = active_log(case).stat().st_size
    with open(active_log(case), "ab") as f:
        f.write(garbage)
    plog = reopen(case)
    assert plog.log_end_offset == template[1][-1].offset + 1
    assert active_log(case).stat().st_size == size
    produce(plog, tag=77)
    plog.close()
    again = reopen(case)
    assert read_all(again)[-1].key == b"k77-0"
    again.close()


def test_crash_image_without_any_flush_recovers_every_written_batch(tmp_path):
    plog = PartitionLog.open(tmp_path / "live", CONFIG)
    for i in range(40):
        produce(plog, records=2, value_size=50, tag=i)
    plog.flush()
    for i in range(40, 60):
        produce(plog, records=2, value_size=50, tag=i)
    # Index entries of the unflushed tail are not in the files yet: a copy is what a
    # killed process leaves behind.
    shutil.copytree(tmp_path / "live", tmp_path / "image")
    expected = read_all(plog)
    plog.close()
    image = reopen(tmp_path / "image")
    assert image.log_end_offset == 120
    assert read_all(image) == expected
    image.close()


def test_active_index_pointing_at_garbage_is_cut_back(tmp_path):
    directory = tmp_path / "badindex"
    plog = PartitionLog.open(directory, LogConfig(index_interval_bytes=200))
    for i in range(30):
        produce(plog, records=2, value_size=50, tag=i)
    records = read_all(plog)
    plog.close()
    index = active_log(directory).with_suffix(".index")
    entries = index.read_bytes()
    assert len(entries) >= 16
    rel, pos = struct.unpack(">II", entries[-8:])
    index.write_bytes(entries[:-8] + struct.pack(">II", rel, pos + 1))
    with capture_logs() as logs:
        plog = PartitionLog.open(directory, LogConfig(index_interval_bytes=200))
    assert [e["event"] for e in logs] == ["log.opened"]
    assert index.stat().st_size == len(entries)
    assert read_all(plog) == records
    plog.close()


# --- sealed segments and their indexes ---------------------------------------------------------


def damaged_index_cases():
    def missing(path):
        path.unlink()

    def torn(path):
        with open(path, "ab") as f:
            f.write(b"\x01\x02\x03")

    def not_increasing(path):
        data = path.read_bytes()
        path.write_bytes(data[8:16] + data[0:8] + data[16:])

    def beyond_file(path):
        with open(path, "ab") as f:
            f.write(struct.pack(">II", 10**6, 10**8))

    def emptied(path):
        path.write_bytes(b"")

    return [missing, torn, not_increasing, beyond_file, emptied]


@pytest.mark.parametrize("damage", damaged_index_cases(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
def test_damaged_sealed_indexes_are_rebuilt(template, tmp_path, damage, suffix):
    records = template[1]
    case = copy(template, tmp_path, "damaged")
    target = sealed_logs(case)[0].with_suffix(suffix)
    original = target.read_bytes()
    damage(target)
    with capture_logs() as logs:
        plog = reopen(case)
    rebuilt = [e for e in logs if e["event"] == "segment.index_rebuilt"]
    assert len(rebuilt) == 1
    assert target.read_bytes() == original
    assert read_all(plog) == records
    for offset in range(0, plog.log_end_offset, 5):
        assert next(decode_batches(plog.read(offset, 100).records, offset)) == records[offset]
    expected = next(r.offset for r in records if r.timestamp_ms >= 1005)
    assert plog.offset_for_timestamp(1005) == expected
    plog.close()


def test_sealed_segment_startup_reads_only_the_index_tail(template, tmp_path):
    case = copy(template, tmp_path, "quiet")
    with capture_logs() as logs:
        plog = reopen(case)
    assert [e["event"] for e in logs] == ["log.opened"]
    plog.close()


def test_stray_and_temporary_files(template, tmp_path):
    case = copy(template, tmp_path, "strays")
    (case / "00000000000000099999.index").write_bytes(b"")
    (case / "00000000000000099999.timeindex").write_bytes(b"")
    (case / "00000000000000000000.index.tmp").write_bytes(b"junk")
    (case / "notes.txt").write_text("hello")
    (case / "123.log").write_bytes(b"")
    with capture_logs() as logs:
        plog = reopen(case)
    events = [(e["event"], Path(e["file"]).name) for e in logs if "file" in e]
    assert ("log.stray_index_removed", "00000000000000099999.index") in events
    assert ("log.temp_file_removed", "00000000000000000000.index.tmp") in events
    assert ("log.unknown_file_ignored", "notes.txt") in events
    assert ("log.unknown_file_ignored", "123.log") in events
    assert not (case / "00000000000000099999.index").exists()
    assert (case / "notes.txt").exists()
    assert read_all(plog) == template[1]
    plog.close()


# --- read-time CRC checks ------------------------------------------------------------------------


def test_reads_never_serve_a_batch_with_a_bad_crc(template, tmp_path):
    case = copy(template, tmp_path, "rot")
    sealed = sealed_logs(case)[0]
    headers = batch_headers(sealed.read_bytes())
    victim = headers[2]
    position = headers[0].size + headers[1].size
    flip(sealed, position + victim.size - 5)
    plog = reopen(case)
    with capture_logs() as logs:
        result = plog.read(0, 1 << 20)
    assert [h.base_offset for h in batch_headers(result.records)] == [
        headers[0].base_offset,
        headers[1].base_offset,
    ]
    assert logs[0]["event"] == "segment.corrupt_batch"
    assert logs[0]["position"] == position
    with pytest.raises(CorruptRecordError) as caught:
        plog.read(victim.base_offset, 1 << 20)
    assert str(sealed) in str(caught.value)
    assert f"byte {position}" in str(caught.value)
    after = plog.read(victim.next_offset, 1 << 20)
    assert after.first_offset == victim.next_offset
    plog.close()


def test_empty_directory_gives_an_empty_log(tmp_path):
    (tmp_path / "p").mkdir()
    plog = reopen(tmp_path / "p")
    assert (plog.log_start_offset, plog.log_end_offset) == (0, 0)
    plog.close()
