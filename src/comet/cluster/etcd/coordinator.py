"""EtcdCoordinator: the Coordinator contract on etcd, for cluster mode.

The key layout is specified in `comet.cluster.etcd.keys`. Moving parts:

- `EtcdSession` (session.py): the connection; maps every etcd error to
  EtcdUnavailableError (retriable) or another CoordinatorError.
- `LeaseKeeper` (lease.py) and `Registration` (registration.py): the
  broker's lease, kept alive and replaced when lost, and its registration
  key, put back whenever it is missing.
- `MetadataWatcher` (watcher.py): the cached copy of ``meta/`` and the
  listeners. Every read of the contract (brokers, controller, topics,
  partition states) is answered from that cache, so the broker's hot paths
  never wait on etcd; they may be a few milliseconds behind another broker's
  write, never behind this broker's own.
- `Controller` (controller.py): election and leadership changes.

Invariants:

- Every write is one etcd transaction conditioned on what it read (create
  revision 0 for a new topic, mod revision for a partition state, topic
  incarnations for offsets, the counter's revision for producer ids).
- A metadata write returns only after this broker's cache contains it and
  its listeners have run after it (`MetadataWatcher.wait_settled`), as with
  the local coordinator: a caller may use the topic at once.
- Committed offsets are read from etcd, not cached: only the group
  coordinator needs them, and not on the hot path.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Mapping, Sequence

import structlog

from comet.cluster.coordinator import (
    BrokerRecord,
    CoordinatorError,
    MetadataListener,
    PartitionState,
    StaleStateError,
    TopicExistsError,
    TopicNotFoundError,
    TopicSpec,
)
from comet.cluster.etcd import ops
from comet.cluster.etcd.cache import MetadataCache, TopicEntry
from comet.cluster.etcd.controller import Controller
from comet.cluster.etcd.keys import (
    BadValueError,
    KeyLayout,
    decode_int,
    encode_int,
    encode_partition,
    encode_topic,
    prefix_end,
)
from comet.cluster.etcd.lease import LeaseKeeper
from comet.cluster.etcd.registration import Registration
from comet.cluster.etcd.session import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    EtcdSession,
)
from comet.cluster.etcd.watcher import MetadataWatcher
from comet.cluster.placement import place

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "/comet"
DEFAULT_LEASE_TTL_S = 10
# Read-only and delete transactions over many topics are sent in chunks this
# large, well below etcd's default --max-txn-ops (128).
CHUNK_OPS = 100
# A commit that keeps meeting recreated topics gives up after this many tries.
COMMIT_ATTEMPTS = 5


class EtcdCoordinator:
    """Cluster metadata in etcd; see the module docstring and `keys` for the layout."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        registration_timeout_s: float | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if lease_ttl_s < 1:
            raise ValueError(f"lease_ttl_s must be >= 1, got {lease_ttl_s}")
        self._layout = KeyLayout(prefix)
        self._session = EtcdSession(
            endpoints, request_timeout_s=request_timeout_s, connect_timeout_s=connect_timeout_s
        )
        self._cache = MetadataCache(self._layout)
        self._watcher = MetadataWatcher(self._session, self._layout, self._cache)
        self._lease_ttl_s = lease_ttl_s
        self._registration_timeout_s = (
            lease_ttl_s + 2.0 if registration_timeout_s is None else registration_timeout_s
        )
        self._timeout_s = request_timeout_s
        self._cluster_id = ""
        self._broker: BrokerRecord | None = None
        self._lease: LeaseKeeper | None = None
        self._registration: Registration | None = None
        self._controller: Controller | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"EtcdCoordinator(endpoints={self._session.endpoints!r}, "
            f"prefix={self._layout.prefix!r}, lease_ttl_s={self._lease_ttl_s})"
        )

    @property
    def cluster_id(self) -> str:
        """Id of the cluster, fixed by the first broker that ever started on this prefix."""
        return self._cluster_id

    @property
    def is_controller(self) -> bool:
        """True while this broker is the controller."""
        return self._controller is not None and self._controller.is_controller

    # --- lifecycle --------------------------------------------------------------

    async def start(self, broker: BrokerRecord) -> None:
        """Connect, register `broker` under a lease, load and watch metadata, run the controller."""
        if self._broker is not None:
            raise RuntimeError("EtcdCoordinator.start() called twice")
        self._broker = broker
        self._lease = LeaseKeeper(self._session, self._lease_ttl_s, self._on_lease_renewed)
        self._registration = Registration(self._session, self._layout, self._watcher, broker)
        self._controller = Controller(
            self._session, self._layout, self._watcher, broker.id, lambda: self._lease_id()
        )
        try:
            await self._session.connect(self._layout.cluster_id)
            self._cluster_id = await self._ensure_cluster_id()
            await self._lease.grant()
            await self._registration.register_at_start(self._lease, self._registration_timeout_s)
            await self._watcher.load()
            self._watcher.start()
            self._lease.start()
            self._controller.start()
        except BaseException:
            await self._shutdown()
            raise
        log.info(
            "coordinator.etcd.started",
            broker_id=broker.id,
            endpoints=self._session.endpoints,
            prefix=self._layout.prefix,
            cluster_id=self._cluster_id,
            brokers=len(self._cache.brokers),
            topics=len(self._cache.topics),
        )

    async def close(self) -> None:
        """Stop every loop and revoke the lease (registration and controller key go at once)."""
        if self._closed:
            return
        self._closed = True
        await self._shutdown()
        log.info("coordinator.etcd.closed", broker_id=self._broker.id if self._broker else None)

    async def _shutdown(self) -> None:
        if self._controller is not None:
            await self._controller.close()
        if self._lease is not None:
            await self._lease.close(revoke=True)
        await self._watcher.close()
        await self._session.close()

    def _lease_id(self) -> int:
        return self._lease.lease_id if self._lease is not None else 0

    async def _on_lease_renewed(self, lease_id: int) -> None:
        assert self._registration is not None
        await self._registration.ensure(lease_id)

    async def _ensure_cluster_id(self) -> str:
        key = self._layout.cluster_id
        fresh = uuid.uuid4().hex
        response = await self._session.txn(
            [ops.created_at(key, 0)],
            [ops.put(key, fresh.encode())],
            [ops.get(key)],
            what="cluster id",
        )
        if response.succeeded:
            log.info("etcd.cluster_created", cluster_id=fresh, prefix=self._layout.prefix)
            return fresh
        return response.responses[0].response_range.kvs[0].value.decode()

    # --- reads (from the cache) -----------------------------------------------------

    async def list_brokers(self) -> list[BrokerRecord]:
        """The live (registered) brokers, sorted by id."""
        return self._cache.broker_list()

    async def controller_id(self) -> str | None:
        """Id of the controller, or None while there is none."""
        holder = self._cache.controller
        return holder.broker_id if holder is not None else None

    async def list_topics(self) -> list[TopicSpec]:
        """Every topic, sorted by name."""
        return self._cache.topic_list()

    async def get_topic(self, name: str) -> TopicSpec | None:
        """One topic, or None."""
        entry = self._cache.topics.get(name)
        return entry.spec if entry is not None else None

    async def partition_states(self, topic: str) -> list[PartitionState]:
        """The partition states of `topic` by partition; TopicNotFoundError if none."""
        states = self._cache.states(topic)
        if states is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return states

    def add_listener(self, listener: MetadataListener) -> None:
        """Await `listener` after every change of brokers, controller, topics or partitions."""
        self._watcher.add_listener(listener)

    # --- metadata writes ------------------------------------------------------------

    async def create_topic(self, spec: TopicSpec) -> list[PartitionState]:
        """Place the partitions on live brokers and create topic and partitions in one txn."""
        brokers = [b.id for b in self._cache.broker_list()]
        if spec.replication_factor > len(brokers):
            # the cache may be a moment behind a broker that just registered
            brokers = await self._read_broker_ids()
        placement = place(
            spec.name,
            spec.partitions,
            spec.replication_factor,
            brokers,
            self._cache.replica_load(),
        )
        states = [
            PartitionState(spec.name, p, replicas, replicas[0], 0, replicas)
            for p, replicas in enumerate(placement)
        ]
        topic_key = self._layout.topic(spec.name)
        response = await self._session.txn(
            [ops.created_at(topic_key, 0)],
            [ops.put(topic_key, encode_topic(spec))]
            + [
                ops.put(self._layout.partition(spec.name, s.partition), encode_partition(s))
                for s in states
            ],
            what=f"create topic {spec.name!r}",
        )
        if not response.succeeded:
            raise TopicExistsError(f"topic {spec.name!r} already exists")
        revision = response.header.revision
        await self._watcher.wait_settled(revision, self._timeout_s)
        return [dataclasses.replace(s, version=revision) for s in states]

    async def delete_topic(self, name: str) -> None:
        """Delete the topic, its partition states and its committed offsets in one txn."""
        partitions = self._layout.partitions(name)
        offsets = self._layout.topic_offsets(name)
        topic_key = self._layout.topic(name)
        response = await self._session.txn(
            [ops.exists(topic_key)],
            [
                ops.delete(topic_key),
                ops.delete(partitions, prefix_end(partitions)),
                ops.delete(offsets, prefix_end(offsets)),
            ],
            what=f"delete topic {name!r}",
        )
        if not response.succeeded:
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        await self._watcher.wait_settled(response.header.revision, self._timeout_s)

    async def update_partition_state(
        self, expected: PartitionState, new: PartitionState
    ) -> PartitionState:
        """Store `new` if the partition's mod revision is still `expected.version`."""
        if (new.topic, new.partition) != (expected.topic, expected.partition):
            raise ValueError(
                f"cannot replace {expected.topic}/{expected.partition} "
                f"by a state of {new.topic}/{new.partition}"
            )
        where = f"{expected.topic}/{expected.partition}"
        key = self._layout.partition(expected.topic, expected.partition)
        response = await self._session.txn(
            [ops.exists(key), ops.modified_at(key, expected.version)],
            [ops.put(key, encode_partition(new))],
            [ops.get(key)],
            what=f"update of partition {where}",
        )
        if not response.succeeded:
            current = response.responses[0].response_range.kvs
            if not current:
                raise TopicNotFoundError(f"partition {where} does not exist")
            raise StaleStateError(
                f"{where}: state version is {current[0].mod_revision}, not {expected.version}"
            )
        revision = response.header.revision
        await self._watcher.wait_settled(revision, self._timeout_s)
        return dataclasses.replace(new, version=revision)

    async def allocate_producer_id(self) -> int:
        """The counter's value, incremented by a compare-and-set on its mod revision."""
        key = self._layout.producer_next_id
        found = (await self._session.range(key, what="producer id read")).kvs
        while True:
            current = decode_int(found[0].value, "producer id counter") if found else 0
            revision = found[0].mod_revision if found else 0
            response = await self._session.txn(
                [ops.modified_at(key, revision)],
                [ops.put(key, encode_int(current + 1))],
                [ops.get(key)],
                what="producer id allocation",
            )
            if response.succeeded:
                return current
            found = response.responses[0].response_range.kvs

    # --- committed offsets --------------------------------------------------------

    async def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store `offsets` in one txn, conditioned on each topic's incarnation."""
        if not offsets:
            return
        for _ in range(COMMIT_ATTEMPTS):
            topics: dict[str, TopicEntry] = {}
            for (topic, partition), offset in offsets.items():
                entry = topics.get(topic) or await self._topic_entry(topic)
                if entry is None:
                    raise TopicNotFoundError(f"topic {topic!r} does not exist")
                count = entry.spec.partitions
                if not 0 <= partition < count:
                    raise TopicNotFoundError(
                        f"topic {topic!r} has partitions 0..{count - 1}, not {partition}"
                    )
                if offset < 0:
                    raise ValueError(f"offset of {topic}/{partition} must be >= 0, got {offset}")
                topics[topic] = entry
            response = await self._session.txn(
                [
                    ops.created_at(self._layout.topic(t), e.create_revision)
                    for t, e in topics.items()
                ],
                [
                    ops.put(self._layout.offset(t, group, p), encode_int(o))
                    for (t, p), o in offsets.items()
                ],
                what=f"offset commit of group {group!r}",
            )
            if response.succeeded:
                return
            # A topic was deleted or recreated since the cache saw it: wait until the
            # cache no longer holds the incarnations this attempt was conditioned on.
            await self._watcher.wait_until(
                functools.partial(self._any_topic_changed, topics),
                self._timeout_s,
                f"a newer state of topics {sorted(topics)}",
            )
        raise CoordinatorError(
            f"offset commit of group {group!r}: its topics kept changing; retry the commit"
        )

    async def fetch_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """Every committed offset of `group` (read from etcd, one range per known topic)."""
        found: dict[tuple[str, int], int] = {}
        topics = sorted(self._cache.topics)
        for start in range(0, len(topics), CHUNK_OPS):
            chunk = topics[start : start + CHUNK_OPS]
            reads = [self._group_range(t, group) for t in chunk]
            response = await self._session.txn(
                [], [ops.get(k, end) for k, end in reads], what=f"offset fetch of group {group!r}"
            )
            for reply in response.responses:
                for kv in reply.response_range.kvs:
                    parsed = self._layout.parse_offset(kv.key)
                    if parsed is None:
                        continue
                    try:
                        found[parsed[0], parsed[2]] = decode_int(kv.value, "offset")
                    except BadValueError as exc:
                        log.error(
                            "etcd.bad_value", key=kv.key.decode(errors="replace"), error=str(exc)
                        )
        return found

    async def list_groups(self) -> list[str]:
        """Groups with at least one committed offset, sorted."""
        root = self._layout.offsets_root
        response = await self._session.range(
            root, prefix_end(root), keys_only=True, what="group list"
        )
        groups = {parsed[1] for kv in response.kvs if (parsed := self._layout.parse_offset(kv.key))}
        return sorted(groups)

    async def delete_group_offsets(self, group: str) -> None:
        """Delete `group`'s offsets in every topic."""
        topics = sorted(self._cache.topics)
        for start in range(0, len(topics), CHUNK_OPS):
            chunk = topics[start : start + CHUNK_OPS]
            await self._session.txn(
                [],
                [ops.delete(*self._group_range(t, group)) for t in chunk],
                what=f"offset delete of group {group!r}",
            )

    def _any_topic_changed(self, seen: Mapping[str, TopicEntry]) -> bool:
        return any(self._cache.topics.get(t) is not entry for t, entry in seen.items())

    async def _read_broker_ids(self) -> list[str]:
        """Ids of the registered brokers, read from etcd rather than the cache."""
        prefix = self._layout.brokers
        response = await self._session.range(
            prefix, prefix_end(prefix), keys_only=True, what="broker list"
        )
        return [meta.name for kv in response.kvs if (meta := self._layout.parse_meta(kv.key))]

    def _group_range(self, topic: str, group: str) -> tuple[bytes, bytes]:
        prefix = self._layout.group_offsets(topic, group)
        return prefix, prefix_end(prefix)

    async def _topic_entry(self, topic: str) -> TopicEntry | None:
        """The cached topic; on a miss, ask etcd in case the cache is a moment behind."""
        entry = self._cache.topics.get(topic)
        if entry is not None:
            return entry
        found = (await self._session.range(self._layout.topic(topic), what="topic read")).kvs
        if not found:
            return None
        await self._watcher.wait_applied(found[0].mod_revision, self._timeout_s)
        return self._cache.topics.get(topic)
