"""flush, retention and reads in other threads while the owner thread appends and rolls."""

import threading

from comet.records import decode_batches
from comet.storage import LogConfig, OffsetOutOfRangeError, PartitionLog

from .support import DEFAULT_TS, produce, read_all


def test_flush_retention_and_reads_race_appends_and_rolls(tmp_path):
    config = LogConfig(segment_bytes=2048, index_interval_bytes=100, retention_bytes=8000)
    log = PartitionLog.open(tmp_path / "p", config, now_ms=lambda: DEFAULT_TS)
    done = threading.Event()
    errors: list[BaseException] = []

    def background(work):
        def loop():
            try:
                while not done.is_set():
                    work()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=loop)
        thread.start()
        return thread

    def reader():
        start, end = log.log_start_offset, log.log_end_offset
        if start == end:
            return
        offset = (start + end) // 2
        try:
            result = log.read(offset, 4096)
        except OffsetOutOfRangeError:
            return  # retention moved the start meanwhile
        records = list(decode_batches(result.records, offset))
        assert records
        assert records[0].offset == offset
        assert records[0].key == b"k%d-%d" % (offset // 3, offset % 3)

    threads = [background(log.flush), background(log.apply_retention), background(reader)]
    try:
        for i in range(400):
            produce(log, records=3, value_size=40, tag=i)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert errors == []
    log.flush()
    assert log.flushed_offset == log.log_end_offset == 1200
    log.apply_retention()
    records = read_all(log)
    assert [r.offset for r in records] == list(range(log.log_start_offset, 1200))
    log.close()
    again = PartitionLog.open(tmp_path / "p", config, now_ms=lambda: DEFAULT_TS)
    assert read_all(again) == records
    again.close()
