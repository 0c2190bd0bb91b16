"""Broker configuration: one table of defaults, shared by the CLI and the docs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from comet.storage import LogConfig

DEFAULT_ADDR = ":6174"
DEFAULT_DATA_DIR = "data"
DEFAULT_ETCD = "localhost:2379"
DEFAULT_PARTITIONS = 1
DEFAULT_REPLICATION_FACTOR = 1
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_INFLIGHT_REQUESTS = 10_000
DEFAULT_PRODUCE_TIMEOUT_MS = 30_000
DEFAULT_RETENTION_CHECK_INTERVAL_MS = 60_000
DEFAULT_FETCH_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_WAIT_MS_LIMIT = 60_000
DEFAULT_SHUTDOWN_GRACE_S = 3.0
DEFAULT_REPLICA_LAG_TIME_MAX_MS = 10_000


@dataclass(frozen=True)
class BrokerConfig:
    """Everything a broker process is started with."""

    broker_id: str
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    listen_addr: str = DEFAULT_ADDR
    advertise_addr: str = ""
    peer_advertise_addr: str = ""
    etcd_endpoints: tuple[str, ...] = ()
    log_defaults: LogConfig = field(default_factory=LogConfig)
    default_partitions: int = DEFAULT_PARTITIONS
    default_replication_factor: int = DEFAULT_REPLICATION_FACTOR
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_inflight_requests: int = DEFAULT_MAX_INFLIGHT_REQUESTS
    produce_timeout_ms: int = DEFAULT_PRODUCE_TIMEOUT_MS
    retention_check_interval_ms: int = DEFAULT_RETENTION_CHECK_INTERVAL_MS
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    replica_lag_time_max_ms: int = DEFAULT_REPLICA_LAG_TIME_MAX_MS

    @property
    def single_broker(self) -> bool:
        """True when no etcd endpoint is configured."""
        return not self.etcd_endpoints

    @property
    def advertised(self) -> str:
        """The address given to clients: --advertise-addr, else the listen address."""
        return self.advertise_addr or self.listen_addr

    @property
    def peer_advertised(self) -> str:
        """The address other brokers dial: --peer-advertise-addr, else the advertised one."""
        return self.peer_advertise_addr or self.advertised

    def replace(self, **changes: object) -> BrokerConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
