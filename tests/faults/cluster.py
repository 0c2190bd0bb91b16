"""The cluster under test: real etcd and brokers, every broker behind three fault proxies.

Broker `bN` listens on its own loopback port, but nobody dials that port
directly except health checks:

- clients dial `bN.client` (its `--advertise-addr`),
- other brokers dial `bN.peer` (its `--peer-advertise-addr`),
- `bN` itself reaches etcd through `bN.etcd` (its `--etcd`).

So the harness can cut a broker off from clients, from its peers or from
etcd, one link at a time. Proxies run on the caller's event loop; process
control (which blocks while a process starts) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from comet.cli.local_broker import LocalBroker
from tests.faults.proxy import FaultProxy, ProxySet, listening_socket
from tests.integration.cluster import Cluster

LINKS = ("client", "peer", "etcd")


class FaultCluster(Cluster):
    """etcd and brokers b0..b{n-1}, each broker behind a client, a peer and an etcd proxy."""

    def __init__(
        self,
        root: Path,
        brokers: int = 3,
        extra_args: list[str] | None = None,
        lease_ttl_s: int = 2,
    ) -> None:
        self._sockets: dict[str, dict[str, socket.socket]] = {}
        self.proxies = ProxySet()
        super().__init__(root, brokers, extra_args, lease_ttl_s)

    def _ports(self, broker_id: str) -> dict[str, int]:
        """Ports of a broker's proxies, reserved (bound and listening) until they start."""
        if broker_id not in self._sockets:
            self._sockets[broker_id] = {link: listening_socket() for link in LINKS}
        return {link: sock.getsockname()[1] for link, sock in self._sockets[broker_id].items()}

    def etcd_endpoint_for(self, broker_id: str) -> str:
        """The broker's etcd proxy."""
        return f"127.0.0.1:{self._ports(broker_id)['etcd']}"

    def broker_args(self, broker_id: str, port: int) -> list[str]:
        """Advertise the client proxy to clients and the peer proxy to other brokers."""
        ports = self._ports(broker_id)
        return [
            "--advertise-addr",
            f"127.0.0.1:{ports['client']}",
            "--peer-advertise-addr",
            f"127.0.0.1:{ports['peer']}",
        ]

    async def start_all(self) -> FaultCluster:
        """Start the proxies, then etcd and the brokers (in a thread), until all registered."""
        for broker_id, broker in self.brokers.items():
            socks = self._sockets[broker_id]
            await self.proxies.add(f"{broker_id}.client", broker.address, sock=socks["client"])
            await self.proxies.add(f"{broker_id}.peer", broker.address, sock=socks["peer"])
            await self.proxies.add(f"{broker_id}.etcd", self.etcd.endpoint, sock=socks["etcd"])
        await asyncio.to_thread(self.start)
        return self

    async def close_all(self) -> None:
        """Stop every process (in a thread, proxies still serving), then the proxies."""
        try:
            await asyncio.to_thread(self.close)
        finally:
            await self.proxies.close()
            for socks in self._sockets.values():
                for sock in socks.values():
                    sock.close()  # those of proxies that never started

    def proxy(self, broker_id: str, link: str) -> FaultProxy:
        """The proxy of one broker's link ("client", "peer" or "etcd")."""
        return self.proxies[f"{broker_id}.{link}"]

    @property
    def client_bootstrap(self) -> str:
        """Every broker's client proxy, comma-separated: what the workload dials."""
        return ",".join(self.proxy(b, "client").address for b in self.brokers)

    @property
    def direct_bootstrap(self) -> str:
        """Every broker's own address: what the harness observes the cluster through."""
        return self.bootstrap

    async def restart(self, broker: LocalBroker, timeout_s: float = 30.0) -> None:
        """Start a stopped or killed broker again on its data directory."""
        await asyncio.to_thread(broker.start, timeout_s)
