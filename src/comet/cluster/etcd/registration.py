"""Registration: this broker's key under ``meta/brokers/``, bound to its current lease.

A broker is live for the cluster exactly while its registration key exists.
The key is created in a transaction on ``create_revision == 0`` and never
overwritten when it belongs to another lease, so two processes can never
both believe they are broker X:

- at start, a key held by another lease means another process with this id
  is registered. That may be this broker's previous life, killed before its
  lease expired, so start waits up to `timeout_s` (default: one TTL and a
  bit) for the key to go away, then fails with BrokerIdConflictError;
- while running, `ensure` (called after each lease renewal) puts the key
  back whenever it is missing from the cache or bound to another lease of
  this broker's (after a lost lease). If another process holds it, that is
  logged as an error and retried on the next renewal.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from comet.cluster.coordinator import BrokerRecord
from comet.cluster.etcd import ops
from comet.cluster.etcd.errors import BrokerIdConflictError
from comet.cluster.etcd.keys import BadValueError, KeyLayout, decode_broker, encode_broker
from comet.cluster.etcd.lease import LeaseKeeper
from comet.cluster.etcd.session import EtcdSession
from comet.cluster.etcd.watcher import MetadataWatcher

log = structlog.get_logger(__name__)

# How often start() looks again while another lease holds this broker id.
CONFLICT_POLL_S = 0.2


class Registration:
    """Puts and keeps one broker's registration key; see the module docstring."""

    def __init__(
        self,
        session: EtcdSession,
        layout: KeyLayout,
        watcher: MetadataWatcher,
        broker: BrokerRecord,
    ) -> None:
        self._session = session
        self._watcher = watcher
        self._broker = broker
        self._key = layout.broker(broker.id)
        self.revision = 0  # etcd revision of the last registration put

    async def register_at_start(self, lease: LeaseKeeper, timeout_s: float) -> None:
        """Register under `lease`, waiting up to `timeout_s` for an older registration to expire."""
        deadline = time.monotonic() + timeout_s
        renewed = time.monotonic()
        waiting = False
        while True:
            if (
                time.monotonic() - renewed > lease.ttl_s / 3
            ):  # its keepalive loop is not running yet
                await lease.renew()
                renewed = time.monotonic()
            holder = await self._put(lease.lease_id)
            if holder is None:
                log.info(
                    "etcd.broker_registered", broker_id=self._broker.id, lease=f"{lease.lease_id:x}"
                )
                return
            if time.monotonic() >= deadline:
                raise BrokerIdConflictError(
                    f"broker id {self._broker.id!r} is registered in etcd by another live "
                    f"process ({holder}); stop that broker or start this one with another "
                    "--broker-id"
                )
            if not waiting:
                waiting = True
                log.warning(
                    "etcd.broker_id_taken",
                    broker_id=self._broker.id,
                    holder=holder,
                    wait_s=round(deadline - time.monotonic(), 1),
                )
            await asyncio.sleep(CONFLICT_POLL_S)

    async def ensure(self, lease: int) -> None:
        """Put the registration back if the cache shows it missing or on another lease."""
        entry = self._watcher.cache.brokers.get(self._broker.id)
        if entry is not None and entry.lease == lease:
            return
        holder = await self._put(lease)
        if holder is None:
            log.info("etcd.broker_registered", broker_id=self._broker.id, lease=f"{lease:x}")
            # so that the next round does not register again before the watch saw this one
            await self._watcher.wait_applied(self.revision, self._session.request_timeout_s)
        else:
            log.error("etcd.broker_id_taken", broker_id=self._broker.id, holder=holder)

    async def _put(self, lease: int) -> str | None:
        """Create the key under `lease`; None when it is ours now, else who holds it."""
        response = await self._session.txn(
            [ops.created_at(self._key, 0)],
            [ops.put(self._key, encode_broker(self._broker), lease=lease)],
            [ops.get(self._key)],
            what=f"registration of broker {self._broker.id!r}",
        )
        if response.succeeded:
            self.revision = response.header.revision
            return None
        found = response.responses[0].response_range.kvs
        if not found:
            return "a registration that expired just now"  # the next attempt can win
        if found[0].lease == lease:
            return None
        try:
            address = decode_broker(found[0].value).address
        except BadValueError:
            address = "unknown address"
        return f"lease {found[0].lease:x}, address {address}"
