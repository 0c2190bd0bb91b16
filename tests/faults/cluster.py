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
from pathlib import Path

from comet.cli.local_broker import LocalBroker, free_port
from tests.faults.proxy import FaultProxy, ProxySet
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
        self.proxy_ports: dict[str, dict[str, int]] = {}
        self.proxies = ProxySet()
        super().__init__(root, brokers, extra_args, lease_ttl_s)

    def _ports(self, broker_id: str) -> dict[str, int]:
        if broker_id not in self.proxy_ports:
            self.proxy_ports[broker_id] = {link: free_port() for link in LINKS}
        return self.proxy_ports[broker_id]

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
            ports = self._ports(broker_id)
            await self.proxies.add(f"{broker_id}.client", broker.address, ports["client"])
            await self.proxies.add(f"{broker_id}.peer", broker.address, ports["peer"])
            await self.proxies.add(f"{broker_id}.etcd", self.etcd.endpoint, ports["etcd"])
        await asyncio.to_thread(self.start)
        return self

    async def close_all(self) -> None:
        """Stop every process (in a thread, proxies still serving), then the proxies."""
        try:
            await asyncio.to_thread(self.close)
        finally:
            await self.proxies.close()

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
