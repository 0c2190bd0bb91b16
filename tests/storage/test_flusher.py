import asyncio
import errno
import threading

import pytest

from comet.storage import InvalidOffsetError, LogClosedError, LogConfig, LogFlusher, PartitionLog

from .support import produce


@pytest.fixture
def log(tmp_path):
    plog = PartitionLog.open(tmp_path / "p", LogConfig())
    yield plog
    plog.close()


class CountingFlush:
    """Counts log.flush calls; with `hold`, each call waits after its fsync until released."""

    def __init__(self, log: PartitionLog, *, hold: bool = False) -> None:
        self.real = log.flush
        self.calls = 0
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        log.flush = self  # type: ignore[method-assign]

    def __call__(self) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.real()
        self.started.set()
        self.release.wait(10)


async def produce_and_wait(log, flusher, tag):
    info = produce(log, records=2, tag=tag)
    await flusher.wait_durable(info.last_offset + 1)
    return info


async def test_concurrent_waiters_share_few_fsyncs(log):
    counter = CountingFlush(log)
    flusher = LogFlusher(log)
    infos = await asyncio.gather(*(produce_and_wait(log, flusher, i) for i in range(200)))
    assert counter.calls <= 3
    assert log.flushed_offset == log.log_end_offset == 400
    assert all(info.last_offset < log.flushed_offset for info in infos)
    assert threading.get_ident() not in counter.threads
    await flusher.close()


async def test_waiters_arriving_during_a_flush_get_one_more_round(log):
    counter = CountingFlush(log, hold=True)
    flusher = LogFlusher(log)
    first = asyncio.create_task(produce_and_wait(log, flusher, 0))
    await asyncio.to_thread(counter.started.wait, 10)
    late = [asyncio.create_task(produce_and_wait(log, flusher, i)) for i in range(1, 50)]
    await asyncio.sleep(0)
    assert not first.done()
    counter.release.set()
    await asyncio.gather(first, *late)
    assert counter.calls == 2
    assert log.flushed_offset == 100


async def test_the_event_loop_keeps_running_during_a_flush(log):
    counter = CountingFlush(log, hold=True)
    flusher = LogFlusher(log)
    waiter = asyncio.create_task(produce_and_wait(log, flusher, 0))
    await asyncio.to_thread(counter.started.wait, 10)
    produce(log, tag=1)  # the loop is free while the fsync thread is blocked
    counter.release.set()
    await waiter
    assert threading.get_ident() not in counter.threads


async def test_already_durable_offsets_return_at_once(log):
    counter = CountingFlush(log)
    flusher = LogFlusher(log)
    produce(log)
    await flusher.wait_durable(0)
    assert counter.calls == 0
    await flusher.flush_now()
    assert counter.calls == 1
    await flusher.wait_durable(1)
    await flusher.flush_now()
    assert counter.calls == 1


async def test_a_flush_error_reaches_every_waiter_of_the_round(log):
    flusher = LogFlusher(log)
    failure = OSError(errno.EIO, "disk on fire")

    def broken_flush():
        raise failure

    log.flush = broken_flush  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(produce_and_wait(log, flusher, i) for i in range(10)), return_exceptions=True
    )
    assert all(result is failure for result in results)


async def test_waiters_whose_records_were_truncated_fail(log):
    counter = CountingFlush(log, hold=True)
    flusher = LogFlusher(log)
    first = asyncio.create_task(produce_and_wait(log, flusher, 0))
    await asyncio.to_thread(counter.started.wait, 10)
    second = asyncio.create_task(produce_and_wait(log, flusher, 1))
    await asyncio.sleep(0)
    log.truncate_to(2)
    counter.release.set()
    await first
    with pytest.raises(InvalidOffsetError, match="truncated"):
        await second


async def test_close_waits_for_the_flush_in_flight_then_refuses(log):
    counter = CountingFlush(log, hold=True)
    flusher = LogFlusher(log)
    waiter = asyncio.create_task(produce_and_wait(log, flusher, 0))
    await asyncio.to_thread(counter.started.wait, 10)
    closing = asyncio.create_task(flusher.close())
    await asyncio.sleep(0)
    assert not closing.done()
    counter.release.set()
    await closing
    assert waiter.done()
    produce(log)
    with pytest.raises(LogClosedError):
        await flusher.wait_durable(log.log_end_offset)


async def test_waiting_beyond_the_log_end_is_a_programming_error(log):
    flusher = LogFlusher(log)
    with pytest.raises(ValueError, match="beyond the log end offset"):
        await flusher.wait_durable(5)


async def test_a_cancelled_waiter_does_not_disturb_the_others(log):
    counter = CountingFlush(log, hold=True)
    flusher = LogFlusher(log)
    first = asyncio.create_task(produce_and_wait(log, flusher, 0))
    await asyncio.to_thread(counter.started.wait, 10)
    doomed = asyncio.create_task(produce_and_wait(log, flusher, 1))
    other = asyncio.create_task(produce_and_wait(log, flusher, 2))
    await asyncio.sleep(0)
    doomed.cancel()
    counter.release.set()
    await asyncio.gather(first, other)
    assert doomed.cancelled()
