"""A real cluster for tests: one etcd and N `comet` brokers on loopback, with short leases."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from comet.cli.local_broker import LocalBroker, free_port
from comet.cli.local_etcd import EtcdProcess
from comet.client import CometClient
from tests.polling import wait_for

T = TypeVar("T")
LEASE_TTL_S = 2


class Cluster:
    """etcd plus brokers b0..b{n-1}; every process is stopped by `close`.

    A subclass may route a broker's traffic elsewhere (the fault harness puts
    proxies there) by overriding `etcd_endpoint_for` and `broker_args`.
    """

    def __init__(
        self,
        root: Path,
        brokers: int = 3,
        extra_args: list[str] | None = None,
        lease_ttl_s: int = LEASE_TTL_S,
    ) -> None:
        self.root = root
        self.etcd = EtcdProcess(data_dir=root / "etcd", log_path=root / "etcd.log")
        self.extra_args = list(extra_args or [])
        self.lease_ttl_s = lease_ttl_s
        self.brokers: dict[str, LocalBroker] = {}
        for i in range(brokers):
            broker_id, port = f"b{i}", free_port()
            self.brokers[broker_id] = LocalBroker(
                data_dir=root / broker_id,
                port=port,
                extra_args=self._args(broker_id, port),
                log_path=root / f"{broker_id}.log",
            )

    def _args(self, broker_id: str, port: int) -> list[str]:
        return [
            "--etcd",
            self.etcd_endpoint_for(broker_id),
            "--broker-id",
            broker_id,
            "--etcd-lease-ttl",
            str(self.lease_ttl_s),
            *self.extra_args,
            *self.broker_args(broker_id, port),
        ]

    def etcd_endpoint_for(self, broker_id: str) -> str:
        """The etcd endpoint a broker is given: etcd's own here."""
        return self.etcd.endpoint

    def broker_args(self, broker_id: str, port: int) -> list[str]:
        """Flags of one broker beyond the shared ones (listening on `port`): none here."""
        return []

    def start(self) -> Cluster:
        """Start etcd, then every broker, and wait until all are registered."""
        self.etcd.start()
        for broker in self.brokers.values():
            broker.start()
        wait_for(lambda: len(self.live_brokers()) == len(self.brokers), 20, "brokers registered")
        return self

    @property
    def bootstrap(self) -> str:
        """Every broker address, comma-separated."""
        return ",".join(b.address for b in self.brokers.values())

    def client(self) -> CometClient:
        """A synchronous client bootstrapped with every broker."""
        return CometClient(self.bootstrap, timeout=5)

    def live_brokers(self, via: str | None = None) -> set[str]:
        """Broker ids in the metadata of `via` (default: any running broker)."""
        address = self.brokers[via].address if via else self.bootstrap
        with CometClient(address, timeout=3) as client:
            return {b.id for b in client.metadata().brokers}

    def partition(self, topic: str, partition: int, via: str | None = None):
        """The PartitionInfo of topic/partition as a broker reports it."""
        address = self.brokers[via].address if via else self.running_bootstrap()
        with CometClient(address, timeout=3) as client:
            return client.metadata([topic]).topics[topic][partition]

    def running_bootstrap(self) -> str:
        """Addresses of the brokers whose process runs."""
        return ",".join(b.address for b in self.brokers.values() if b.running)

    def controller(self) -> str:
        """The controller's id as a running broker reports it."""
        with CometClient(self.running_bootstrap(), timeout=3) as client:
            return client.metadata().controller_id

    def close(self) -> None:
        """Stop every broker and etcd."""
        for broker in self.brokers.values():
            try:
                broker.stop()
            except Exception:  # already dead or stuck: make sure it is gone
                broker.kill()
        self.etcd.stop()
