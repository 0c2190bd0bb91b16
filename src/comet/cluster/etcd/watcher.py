"""MetadataWatcher: keeps the MetadataCache equal to etcd's ``meta/`` range and runs listeners.

How the cache stays current:

1. `load` reads the whole ``meta/`` range at one revision R (the snapshot).
2. The watch starts at R + 1. Each watch response carries whole revisions
   (etcd never splits one transaction's events over responses unless asked
   to fragment, and Comet does not ask), so the cache moves from one
   consistent revision to the next. Its revision is that of the last event
   applied (or of a progress notification, which etcd sends only once a
   watcher has caught up).
3. When the stream breaks (etcd restarted, connection lost, member without
   a leader), the loop waits a backoff (50 ms doubling to 1 s) and watches
   again from the cache's revision + 1 on the session's current endpoint,
   so no event is missed or applied twice. If etcd compacted that revision
   away meanwhile, it reloads the snapshot instead.

While etcd is away the cache keeps serving the last revision it saw.

Listeners are awaited by one task after each applied batch, one after the
other; batches that arrive while they run are coalesced into one more
round. A listener's exception is logged, never propagated. `wait_settled`
lets a writer wait until its own write is in the cache and every listener
has run after it (from inside a listener it waits for the cache only, so a
listener that writes cannot deadlock on itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from aetcd import rpc

from comet.cluster.coordinator import MetadataListener
from comet.cluster.etcd.cache import MetadataCache
from comet.cluster.etcd.errors import EtcdUnavailableError
from comet.cluster.etcd.keys import KeyLayout, prefix_end
from comet.cluster.etcd.session import Backoff, EtcdSession

log = structlog.get_logger(__name__)

_PUT = rpc.Event.EventType.PUT


class _CompactedError(Exception):
    """The revision to resume from was compacted away; carries etcd's compact revision."""


class MetadataWatcher:
    """Snapshot, watch-with-resume and listener dispatch; see the module docstring."""

    def __init__(self, session: EtcdSession, layout: KeyLayout, cache: MetadataCache) -> None:
        self.cache = cache
        self._session = session
        self._range = (layout.meta, prefix_end(layout.meta))
        self._listeners: list[MetadataListener] = []
        self._notified = 0  # listeners have run after the cache reached this revision
        self._dirty = False  # the cache changed since listeners last ran
        self._changed = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None

    def add_listener(self, listener: MetadataListener) -> None:
        """Await `listener` after every applied change."""
        self._listeners.append(listener)

    async def load(self) -> None:
        """Replace the cache with a snapshot of the ``meta/`` range."""
        response = await self._session.range(*self._range, what="metadata snapshot")
        self.cache.reset(response.kvs, response.header.revision)
        self._dirty = True
        self._signal()
        log.info("etcd.snapshot_loaded", revision=response.header.revision, keys=len(response.kvs))

    def start(self) -> None:
        """Start watching from the cache's revision + 1 and dispatching to listeners."""
        self._watch_task = asyncio.create_task(self._watch_loop(), name="etcd-watch")
        self._dispatch_task = asyncio.create_task(self._dispatch_loop(), name="etcd-listeners")

    async def close(self) -> None:
        """Stop both tasks; idempotent."""
        tasks = [t for t in (self._watch_task, self._dispatch_task) if t is not None]
        self._watch_task = self._dispatch_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listeners.clear()

    # --- waiting for revisions ------------------------------------------------

    async def wait_applied(self, revision: int, timeout_s: float) -> None:
        """Return once the cache is at `revision` (of a ``meta/`` write) or later."""
        await self.wait_until(
            lambda: self.cache.revision >= revision, timeout_s, f"etcd revision {revision}"
        )

    async def wait_settled(self, revision: int, timeout_s: float) -> None:
        """Return once the cache is at `revision` and listeners have run after it.

        Only reaching the revision is bounded by `timeout_s` (it depends on etcd);
        the listeners are this process's own work and are waited for as long as
        they take, as the local coordinator does.
        """
        await self.wait_applied(revision, timeout_s)
        if asyncio.current_task() is not self._dispatch_task:
            while self._notified < revision:
                await self._changed.wait()

    async def wait_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Return once `done()` holds for the cache; EtcdUnavailableError after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    await self._changed.wait()
        except TimeoutError:
            raise EtcdUnavailableError(
                f"this broker's watch has not reached {what} within {timeout_s:g} s "
                f"(it is at revision {self.cache.revision}; etcd at "
                f"{self._session.endpoints} unreachable?)"
            ) from None

    async def wait_changed(self, after: int, timeout_s: float | None) -> None:
        """Return once the cache is past revision `after`, or after `timeout_s` regardless."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.cache.revision <= after:
                    await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the watch ----------------------------------------------------------------

    async def _watch_loop(self) -> None:
        backoff = Backoff()
        lost_at: float | None = None  # only the first failure of an outage is a warning
        while True:
            start = self.cache.revision + 1
            try:
                stream = await self._session.watch(*self._range, start_revision=start)
                try:
                    async for response in stream.responses():
                        if lost_at is not None:
                            log.info(
                                "etcd.watch_resumed",
                                from_revision=start,
                                endpoint=self._session.endpoint,
                                away_s=round(time.monotonic() - lost_at, 3),
                            )
                            lost_at = None
                        self._handle(response)
                        backoff.reset()
                finally:
                    stream.cancel()
            except _CompactedError as exc:
                log.warning("etcd.watch_compacted", from_revision=start, compacted=str(exc))
                try:
                    await self.load()
                except EtcdUnavailableError as again:
                    log.warning("etcd.snapshot_failed", error=str(again))
                    await asyncio.sleep(backoff.next())
            except EtcdUnavailableError as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning("etcd.watch_lost", resume_from=start, error=str(exc))
                await asyncio.sleep(backoff.next())

    def _handle(self, response: rpc.WatchResponse) -> None:
        if response.compact_revision:
            raise _CompactedError(response.compact_revision)
        if response.canceled:
            raise EtcdUnavailableError(f"etcd cancelled the watch: {response.cancel_reason}")
        if response.created:
            return
        if response.events:
            batch = [(event.type == _PUT, event.kv) for event in response.events]
            self.cache.apply(batch, max(event.kv.mod_revision for event in response.events))
            self._dirty = True
        else:
            # a progress notification: every event up to this revision was delivered
            self.cache.revision = max(self.cache.revision, response.header.revision)
        self._signal()

    # --- listeners ----------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            while self._notified >= self.cache.revision:
                await self._changed.wait()
            revision = self.cache.revision
            if self._dirty:
                self._dirty = False
                for listener in list(self._listeners):
                    try:
                        await listener()
                    except Exception:
                        log.exception("coordinator.listener_failed", listener=repr(listener))
            self._notified = revision
            self._signal()
