"""Producer and consumer configuration, with the original Comet defaults."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from comet.aio.addresses import parse_addresses
from comet.records import Compression

# Producer defaults (the original: buffer 1000, flush every 100 ms, metadata every 30 s).
DEFAULT_BUFFER_SIZE = 1000
DEFAULT_FLUSH_INTERVAL = 0.1
DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_METADATA_REFRESH_INTERVAL = 30.0
DEFAULT_RETRY_BACKOFF = 0.05
DEFAULT_MAX_RETRY_BACKOFF = 5.0
DEFAULT_DELIVERY_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 1
MAX_IN_FLIGHT_IDEMPOTENT = 5

Serializer = Callable[[Any], bytes]
AcksSetting = Literal[0, 1, "all"]


@dataclass
class ProducerConfig:
    """How a TopicProducer batches, acknowledges and retries.

    buffer_size: records accepted by send() but not yet handed to a request;
    send() waits (up to send_timeout) while it is full. A batch is sent when
    it holds batch_size records or max_batch_bytes, or flush_interval after
    its first record. max_in_flight requests per partition (1 keeps strict
    order even across retries). Failed sends are retried with backoff until
    delivery_timeout after the record was accepted.

    enable_idempotence (None = on exactly when acks="all", as in Kafka;
    True needs acks="all"): the producer gets a producer id from the
    cluster and stamps each batch with it and a per-partition sequence, so
    the leader drops retried batches it already has (answering with their
    original offsets) and refuses gaps; retries never duplicate records. It
    keeps one request in flight per partition, of at most 5 batches (the
    broker remembers 5 per producer); max_in_flight must be <= 5 but does
    not raise that.
    """

    bootstrap_addresses: str | Sequence[str] = "localhost:6174"
    topic: str = ""
    partitions: int = 1
    replication_factor: int = 1
    buffer_size: int = DEFAULT_BUFFER_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    acks: AcksSetting = "all"
    compression: str | None = None
    metadata_refresh_interval: float = DEFAULT_METADATA_REFRESH_INTERVAL
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    max_retry_backoff: float = DEFAULT_MAX_RETRY_BACKOFF
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    create_topic: bool = True
    enable_idempotence: bool | None = None
    key_serializer: Serializer | None = None
    value_serializer: Serializer | None = None
    topic_config: dict[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        """Whether the producer is idempotent: enable_idempotence, or by default acks="all"."""
        if self.enable_idempotence is None:
            return self.acks in ("all", -1)
        return self.enable_idempotence

    def validate(self) -> None:
        """Raise ValueError naming the first field that breaks its rule."""
        parse_addresses(self.bootstrap_addresses)
        if not self.topic:
            raise ValueError("topic: a topic name is required")
        _positive_int("partitions", self.partitions)
        _positive_int("replication_factor", self.replication_factor)
        _positive_int("buffer_size", self.buffer_size)
        _positive_int("batch_size", self.batch_size)
        _positive_int("max_in_flight", self.max_in_flight)
        if self.enable_idempotence and self.acks not in ("all", -1):
            raise ValueError(
                f"enable_idempotence: needs acks='all' (got acks={self.acks!r}): a batch "
                "acknowledged by the leader alone can be lost, so its retry is not a duplicate"
            )
        if self.idempotent and self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT:
            raise ValueError(
                f"max_in_flight: must be <= {MAX_IN_FLIGHT_IDEMPOTENT} with enable_idempotence, "
                f"got {self.max_in_flight}"
            )
        if self.max_batch_bytes < 1024:
            raise ValueError(f"max_batch_bytes: must be >= 1024, got {self.max_batch_bytes}")
        if self.max_request_bytes < self.max_batch_bytes:
            raise ValueError("max_request_bytes: must be >= max_batch_bytes")
        for name in ("flush_interval", "retry_backoff", "metadata_refresh_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0 seconds, got {getattr(self, name)}")
        for name in ("delivery_timeout", "send_timeout", "max_retry_backoff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0 seconds, got {getattr(self, name)}")
        if self.acks not in (0, 1, "all", -1):
            raise ValueError(f"acks: must be 0, 1 or 'all', not {self.acks!r}")
        Compression.parse(self.compression)


def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


# Consumer defaults (the original: poll 500 ms, 100 records per poll, buffer 256,
# backoff 50 ms doubling to 5 s, commit every 100 records or 500 ms, liveness 10 s).
DEFAULT_POLL_INTERVAL = 0.5
DEFAULT_MAX_POLL_RECORDS = 100
DEFAULT_CHANNEL_BUFFER = 256
DEFAULT_BACKOFF = 0.05
DEFAULT_MAX_BACKOFF = 5.0
DEFAULT_AUTO_COMMIT_EVERY = 100
DEFAULT_AUTO_COMMIT_INTERVAL = 0.5
DEFAULT_SESSION_TIMEOUT = 10.0
DEFAULT_FETCH_MAX_BYTES = 1024 * 1024

Deserializer = Callable[[bytes], Any]


@dataclass
class ConsumerConfig:
    """How a Consumer joins its group, fetches, delivers and commits.

    poll_interval: how long one fetch waits on the broker for new records
    (long-poll), so an idle consumer costs one request per interval per
    partition. channel_buffer: records fetched ahead of the handler. Offsets
    are committed after the handler returned: every auto_commit_every records
    or auto_commit_interval seconds (enable_auto_commit=False: only commit()).
    auto_offset_reset: where a partition without a committed offset starts.
    """

    bootstrap_addresses: str | Sequence[str] = "localhost:6174"
    group: str = ""
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_records: int = DEFAULT_MAX_POLL_RECORDS
    channel_buffer: int = DEFAULT_CHANNEL_BUFFER
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    enable_auto_commit: bool = True
    auto_commit_every: int = DEFAULT_AUTO_COMMIT_EVERY
    auto_commit_interval: float = DEFAULT_AUTO_COMMIT_INTERVAL
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    heartbeat_interval: float | None = None
    fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES
    client_id: str = ""
    key_deserializer: Deserializer | None = None
    value_deserializer: Deserializer | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first field that breaks its rule."""
        parse_addresses(self.bootstrap_addresses)
        if not self.group:
            raise ValueError("group: a consumer group name is required")
        _positive_int("max_poll_records", self.max_poll_records)
        _positive_int("channel_buffer", self.channel_buffer)
        _positive_int("auto_commit_every", self.auto_commit_every)
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(
                f"auto_offset_reset: must be 'earliest' or 'latest', not {self.auto_offset_reset!r}"
            )
        if not 1.0 <= self.session_timeout <= 300.0:
            raise ValueError(
                f"session_timeout: must be between 1 and 300 seconds, got {self.session_timeout}"
            )
        for name in ("poll_interval", "backoff", "max_backoff", "auto_commit_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0 seconds, got {getattr(self, name)}")
        if self.heartbeat_interval is not None and not (
            0 < self.heartbeat_interval < self.session_timeout
        ):
            raise ValueError("heartbeat_interval: must be > 0 and below session_timeout")
        if self.fetch_max_bytes < 1024:
            raise ValueError(f"fetch_max_bytes: must be >= 1024, got {self.fetch_max_bytes}")

    @property
    def effective_heartbeat_interval(self) -> float:
        """heartbeat_interval, or a third of the session timeout (at most 1 s)."""
        return self.heartbeat_interval or min(1.0, self.session_timeout / 3)
