"""LeaseKeeper: keeps this broker's etcd lease alive, and its registration with it.

The broker's registration key (and the controller key while it holds that
role) is bound to one lease of `ttl_s` seconds. The keeper renews it every
ttl/3. Each round, after the renewal, it calls `on_renewed(lease_id)`,
which puts the registration back if it is missing.

Cases, in the order the loop meets them:

- renewal answered with a TTL: the lease lives; nothing else to do.
- renewal answered with TTL 0: the lease expired (etcd was unreachable for
  longer than the TTL, or someone revoked it) and etcd deleted every key
  bound to it. The keeper grants a new lease; `on_renewed` registers the
  broker again, and the controller loop campaigns with the new lease.
- renewal failed (etcd down, unreachable, too slow): retry after a backoff
  (50 ms doubling to 1 s), each time on the next endpoint if there are
  several. etcd keeps leases across its own restarts (they are renewed when
  it comes back), so a short outage ends with the old lease still valid.

Only state changes are logged (etcd.unreachable / etcd.reachable /
etcd.lease_lost), not every failed retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from comet.cluster.coordinator import CoordinatorError
from comet.cluster.etcd.errors import EtcdUnavailableError
from comet.cluster.etcd.session import Backoff, EtcdSession

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """Renews one lease forever, replacing it when it is lost; see the module docstring."""

    def __init__(
        self,
        session: EtcdSession,
        ttl_s: int,
        on_renewed: Callable[[int], Awaitable[None]],
    ) -> None:
        self._session = session
        self.ttl_s = ttl_s
        self._on_renewed = on_renewed
        self.lease_id = 0
        self._task: asyncio.Task[None] | None = None

    async def grant(self) -> int:
        """Grant the first lease (before `start`)."""
        self.lease_id = await self._session.grant_lease(self.ttl_s)
        log.info("etcd.lease_granted", lease=f"{self.lease_id:x}", ttl_s=self.ttl_s)
        return self.lease_id

    def start(self) -> None:
        """Start renewing."""
        self._task = asyncio.create_task(self._loop(), name="etcd-keepalive")

    async def close(self, revoke: bool) -> None:
        """Stop renewing; with `revoke`, delete the lease and its keys now (best effort)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if revoke and self.lease_id:
            lease, self.lease_id = self.lease_id, 0
            try:
                await self._session.revoke_lease(lease, timeout_s=min(2.0, self.ttl_s / 2))
                log.info("etcd.lease_revoked", lease=f"{lease:x}")
            except CoordinatorError as exc:
                # the lease expires by itself within its TTL
                log.warning("etcd.lease_revoke_failed", lease=f"{lease:x}", error=str(exc))

    async def renew(self) -> None:
        """Renew now (granting a new lease if it was lost); for waits before `start`."""
        await self._renew(timeout_s=self.ttl_s / 3)

    async def _loop(self) -> None:
        interval = self.ttl_s / 3
        backoff = Backoff()
        down_since: float | None = None
        while True:
            try:
                await self._renew(timeout_s=interval)
                if down_since is not None:
                    log.info(
                        "etcd.reachable",
                        endpoint=self._session.endpoint,
                        down_s=round(time.monotonic() - down_since, 3),
                    )
                    down_since = None
                await self._on_renewed(self.lease_id)
                backoff.reset()
                delay = interval
            except EtcdUnavailableError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("etcd.unreachable", endpoint=self._session.endpoint, error=str(exc))
                self._session.failover()
                delay = backoff.next()
            except CoordinatorError as exc:
                log.error("etcd.keepalive_failed", error=str(exc))
                delay = interval
            await asyncio.sleep(delay)

    async def _renew(self, timeout_s: float) -> None:
        ttl = await self._session.refresh_lease(self.lease_id, timeout_s=timeout_s)
        if ttl > 0:
            return
        log.warning("etcd.lease_lost", lease=f"{self.lease_id:x}")
        self.lease_id = await self._session.grant_lease(self.ttl_s)
        log.info("etcd.lease_granted", lease=f"{self.lease_id:x}", ttl_s=self.ttl_s)
