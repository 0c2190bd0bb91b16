"""Group commit: one fdatasync shared by every append waiting to become durable."""

from __future__ import annotations

import asyncio

from comet.storage.errors import InvalidOffsetError, LogClosedError
from comet.storage.log import PartitionLog


class LogFlusher:
    """Coalesces fsyncs of one PartitionLog: many concurrent waiters share one fdatasync.

    At most one `log.flush` runs at a time, in a worker thread, so the event
    loop never blocks on the disk. Waiters that arrive while it runs are
    queued; when it ends, those it covered are released and one more flush
    runs for all the others together. A flush error is raised in every waiter
    of that round. Waiters are plain asyncio futures: no thread or lock per
    append. Use it from the event loop thread only.
    """

    def __init__(self, log: PartitionLog) -> None:
        self._log = log
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def wait_durable(self, offset: int) -> None:
        """Return once log.flushed_offset >= offset (the offset after the caller's batch)."""
        if self._log.flushed_offset >= offset:
            return
        if self._closed:
            raise LogClosedError(f"{self._log.directory}: flusher is closed")
        if offset > self._log.log_end_offset:
            raise ValueError(
                f"offset {offset} is beyond the log end offset {self._log.log_end_offset}"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((offset, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"flush {self._log.directory}")
        await future

    async def flush_now(self) -> None:
        """Make everything appended so far durable (interval policy, shutdown)."""
        await self.wait_durable(self._log.log_end_offset)

    async def close(self) -> None:
        """Refuse new waiters and wait for the flushes already owed to finish."""
        self._closed = True
        task = self._task
        if task is not None:
            await asyncio.shield(task)

    async def _run(self) -> None:
        try:
            while self._waiters:
                round_, self._waiters = self._waiters, []
                try:
                    await asyncio.to_thread(self._log.flush)
                except asyncio.CancelledError:
                    for _, future in round_ + self._waiters:
                        future.cancel()
                    self._waiters = []
                    raise
                except Exception as exc:
                    for _, future in round_:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self._settle(round_)
                queued, self._waiters = self._waiters, []
                self._settle(queued)
        finally:
            self._task = None

    def _settle(self, waiters: list[tuple[int, asyncio.Future[None]]]) -> None:
        """Release covered waiters, fail those whose records were truncated, requeue the rest."""
        flushed = self._log.flushed_offset
        end = self._log.log_end_offset
        for offset, future in waiters:
            if future.done():
                continue
            if offset <= flushed:
                future.set_result(None)
            elif offset > end:
                future.set_exception(
                    InvalidOffsetError(
                        f"{self._log.directory}: offsets below {offset} were truncated "
                        f"(log end offset {end}) before they became durable"
                    )
                )
            else:
                self._waiters.append((offset, future))
