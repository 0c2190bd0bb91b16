"""`comet`: run one broker.

Every flag has an environment variable (COMET_...) that applies when the
flag is not given. `--etcd ""` runs single-broker mode with no etcd.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import click
import structlog

from comet.broker import BrokerConfig
from comet.broker.config import (
    DEFAULT_ADDR,
    DEFAULT_DATA_DIR,
    DEFAULT_ETCD,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INFLIGHT_REQUESTS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PARTITIONS,
    DEFAULT_PRODUCE_TIMEOUT_MS,
    DEFAULT_REPLICA_LAG_TIME_MAX_MS,
    DEFAULT_RETENTION_CHECK_INTERVAL_MS,
)
from comet.broker.log_manager import (
    BrokerIdFileError,
    DataDirLockedError,
    LogManager,
    load_or_create_broker_id,
)
from comet.cluster import Coordinator, CoordinatorError, LocalCoordinator
from comet.logs import LEVELS, configure_logging
from comet.server import BrokerServer, parse_listen_address
from comet.server.app import AddressInUseError, check_dial_address
from comet.storage import InvalidConfigError, LogConfig

log = structlog.get_logger("comet")

# flag name -> topic config key of the broker-wide storage defaults
STORAGE_FLAGS = {
    "segment_bytes": "segment.bytes",
    "segment_ms": "segment.ms",
    "retention_ms": "retention.ms",
    "retention_bytes": "retention.bytes",
    "flush_policy": "flush.policy",
    "flush_interval_ms": "flush.interval.ms",
    "max_message_bytes": "max.message.bytes",
    "min_insync_replicas": "min.insync.replicas",
}


def _check_etcd_reachable(endpoints: tuple[str, ...], timeout_s: float = 2.0) -> str | None:
    """Return an error message unless some endpoint accepts a TCP connection."""
    errors = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s):
                return None
        except (OSError, ValueError) as exc:
            errors.append(f"{endpoint}: {exc}")
    return "; ".join(errors)


def _storage_defaults(options: dict[str, object]) -> LogConfig:
    overrides = {
        key: str(options[flag]) for flag, key in STORAGE_FLAGS.items() if options[flag] is not None
    }
    return LogConfig().with_overrides(overrides)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    envvar="COMET_DATA_DIR",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory for the logs.",
)
@click.option(
    "--addr",
    envvar="COMET_ADDR",
    default=DEFAULT_ADDR,
    show_default=True,
    help="gRPC listen address; ':PORT' listens on all interfaces.",
)
@click.option(
    "--etcd",
    envvar="COMET_ETCD",
    default=DEFAULT_ETCD,
    show_default=True,
    help="Comma-separated etcd endpoints; empty = single-broker mode.",
)
@click.option(
    "--etcd-lease-ttl",
    envvar="COMET_ETCD_LEASE_TTL",
    type=click.IntRange(1, 300),
    default=10,
    show_default=True,
    help="Seconds after which a silent broker is considered dead (cluster mode).",
)
@click.option(
    "--log-level",
    envvar="COMET_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warn", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    envvar="COMET_LOG_FORMAT",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "console", "json"]),
    help="auto = readable on a terminal, JSON otherwise.",
)
@click.option(
    "--broker-id",
    envvar="COMET_BROKER_ID",
    default=None,
    help="Unique broker id [default: a UUID kept in the data directory].",
)
@click.option(
    "--advertise-addr",
    envvar="COMET_ADVERTISE_ADDR",
    default=None,
    help="Address given to clients and peers [default: --addr].",
)
@click.option(
    "--peer-advertise-addr",
    envvar="COMET_PEER_ADVERTISE_ADDR",
    default=None,
    help="Address other brokers dial for broker-to-broker calls [default: --advertise-addr].",
)
@click.option(
    "--segment-bytes",
    envvar="COMET_SEGMENT_BYTES",
    type=int,
    default=None,
    help="Roll a segment at this size [default: 1073741824].",
)
@click.option(
    "--segment-ms",
    envvar="COMET_SEGMENT_MS",
    type=int,
    default=None,
    help="Roll a segment at this age [default: 7 days].",
)
@click.option(
    "--retention-ms",
    envvar="COMET_RETENTION_MS",
    type=int,
    default=None,
    help="Delete segments older than this; -1 = keep [default: 7 days].",
)
@click.option(
    "--retention-bytes",
    envvar="COMET_RETENTION_BYTES",
    type=int,
    default=None,
    help="Per-partition size cap; -1 = none [default: -1].",
)
@click.option(
    "--flush-policy",
    envvar="COMET_FLUSH_POLICY",
    default=None,
    type=click.Choice(["batch", "interval", "none"]),
    help="batch: fsync (group commit) before acking; interval: fsync every "
    "--flush-interval-ms; none: leave it to the OS [default: batch].",
)
@click.option(
    "--flush-interval-ms",
    envvar="COMET_FLUSH_INTERVAL_MS",
    type=int,
    default=None,
    help="fsync period of the interval policy [default: 1000].",
)
@click.option(
    "--max-message-bytes",
    envvar="COMET_MAX_MESSAGE_BYTES",
    type=int,
    default=None,
    help="Largest batch set one produce may append [default: 4194304].",
)
@click.option(
    "--min-insync-replicas",
    envvar="COMET_MIN_INSYNC_REPLICAS",
    type=int,
    default=None,
    help="Replicas that must have a batch before acks=all succeeds [default: 1].",
)
@click.option(
    "--replica-lag-time-max-ms",
    envvar="COMET_REPLICA_LAG_TIME_MAX_MS",
    type=click.IntRange(100),
    default=DEFAULT_REPLICA_LAG_TIME_MAX_MS,
    show_default=True,
    help="A follower not caught up for this long leaves the ISR.",
)
@click.option(
    "--max-request-bytes",
    envvar="COMET_MAX_REQUEST_BYTES",
    type=click.IntRange(1024),
    default=DEFAULT_MAX_REQUEST_BYTES,
    show_default=True,
    help="Largest gRPC request accepted; larger ones get RESOURCE_EXHAUSTED.",
)
@click.option(
    "--max-concurrent-streams",
    envvar="COMET_MAX_CONCURRENT_STREAMS",
    type=click.IntRange(1, 2**31 - 1),
    default=DEFAULT_MAX_CONCURRENT_STREAMS,
    show_default=True,
    help="In-flight calls per client connection (HTTP/2 streams); more wait in the client.",
)
@click.option(
    "--max-connections",
    envvar="COMET_MAX_CONNECTIONS",
    type=click.IntRange(1, 2**31 - 2),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Client connections at once; more are closed on accept (clients retry).",
)
@click.option(
    "--max-inflight-requests",
    envvar="COMET_MAX_INFLIGHT_REQUESTS",
    type=click.IntRange(1, 2**31 - 1),
    default=DEFAULT_MAX_INFLIGHT_REQUESTS,
    show_default=True,
    help="Client calls served at once by the whole broker, long-polls included; "
    "more get RESOURCE_EXHAUSTED.",
)
@click.option(
    "--default-partitions",
    envvar="COMET_DEFAULT_PARTITIONS",
    type=click.IntRange(1),
    default=DEFAULT_PARTITIONS,
    show_default=True,
    help="Partitions of a topic created without a count.",
)
@click.option(
    "--produce-timeout-ms",
    envvar="COMET_PRODUCE_TIMEOUT_MS",
    type=click.IntRange(1),
    default=DEFAULT_PRODUCE_TIMEOUT_MS,
    show_default=True,
    help="Default wait for acks when a request sets none.",
)
@click.option(
    "--retention-check-interval-ms",
    envvar="COMET_RETENTION_CHECK_INTERVAL_MS",
    type=click.IntRange(100),
    default=DEFAULT_RETENTION_CHECK_INTERVAL_MS,
    show_default=True,
    help="How often retention runs.",
)
def main(**options: object) -> None:
    """Run a Comet broker."""
    level = str(options["log_level"]).lower()
    fmt = options["log_format"]
    configure_logging(
        level if level in LEVELS else "info", None if fmt == "auto" else fmt == "json"
    )
    try:
        defaults = _storage_defaults(options)
        parse_listen_address(str(options["addr"]))
        if options["peer_advertise_addr"]:
            check_dial_address("--peer-advertise-addr", str(options["peer_advertise_addr"]))
    except (InvalidConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    data_dir: Path = options["data_dir"]  # type: ignore[assignment]
    etcd_setting = str(options["etcd"] or "")
    source = click.get_current_context().get_parameter_source("etcd")
    if source == click.core.ParameterSource.DEFAULT and os.environ.get("COMET_ETCD") == "":
        etcd_setting = ""  # click ignores empty variables; COMET_ETCD= means no etcd
    etcd = tuple(e.strip() for e in etcd_setting.split(",") if e.strip())
    if etcd:
        problem = _check_etcd_reachable(etcd)
        if problem:
            _fail(
                f"cannot reach etcd at {','.join(etcd)} ({problem}).\n"
                'To run a single broker without etcd, pass --etcd "" (or set COMET_ETCD=).'
            )
    try:
        broker_id = str(options["broker_id"] or load_or_create_broker_id(data_dir))
    except BrokerIdFileError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use data directory {data_dir}: {exc}")
    config = BrokerConfig(
        broker_id=broker_id,
        data_dir=data_dir,
        listen_addr=str(options["addr"]),
        advertise_addr=str(options["advertise_addr"] or ""),
        peer_advertise_addr=str(options["peer_advertise_addr"] or ""),
        etcd_endpoints=etcd,
        log_defaults=defaults,
        default_partitions=int(options["default_partitions"]),  # type: ignore[arg-type]
        max_request_bytes=int(options["max_request_bytes"]),  # type: ignore[arg-type]
        max_concurrent_streams=int(options["max_concurrent_streams"]),  # type: ignore[arg-type]
        max_connections=int(options["max_connections"]),  # type: ignore[arg-type]
        max_inflight_requests=int(options["max_inflight_requests"]),  # type: ignore[arg-type]
        produce_timeout_ms=int(options["produce_timeout_ms"]),  # type: ignore[arg-type]
        retention_check_interval_ms=int(options["retention_check_interval_ms"]),  # type: ignore[arg-type]
        replica_lag_time_max_ms=int(options["replica_lag_time_max_ms"]),  # type: ignore[arg-type]
    )
    coordinator: Coordinator
    if etcd:
        from comet.cluster.etcd import EtcdCoordinator

        coordinator = EtcdCoordinator(etcd, lease_ttl_s=int(options["etcd_lease_ttl"]))  # type: ignore[arg-type]
    else:
        coordinator = LocalCoordinator(LogManager(data_dir, defaults).meta_dir)
    server = BrokerServer(config, coordinator)
    try:
        asyncio.run(server.serve_until_signal())
    except (DataDirLockedError, CoordinatorError, AddressInUseError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"broker failed: {exc}")


def _fail(message: str) -> None:
    click.echo(f"comet: error: {message}", err=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
