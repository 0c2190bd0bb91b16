"""MetadataCache: this broker's copy of everything under ``{prefix}/meta/``.

It is built from one snapshot (a range read at revision R) and then kept
current by applying watch batches in revision order, so at any moment it
equals etcd's ``meta/`` range at `revision` (a possibly old but consistent
revision, never a mix of two). Every read of the broker's hot paths is
answered from here without waiting on etcd.

Pure data: no I/O, no tasks. The watcher owns the only instance and is the
only writer; readers get fresh lists or immutable records they may keep.
Values that do not decode are logged (``etcd.bad_value``) and treated as
absent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import structlog

from comet.cluster.coordinator import BrokerRecord, PartitionState, TopicSpec
from comet.cluster.etcd.keys import (
    BadValueError,
    KeyLayout,
    decode_broker,
    decode_partition,
    decode_topic,
)

log = structlog.get_logger(__name__)


class KeyValue(Protocol):
    """The fields of etcd's mvccpb.KeyValue the cache reads."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class BrokerEntry:
    """A registered broker and the lease its key is bound to."""

    record: BrokerRecord
    lease: int


@dataclass(frozen=True, slots=True)
class ControllerEntry:
    """The controller key: holder, lease, and term (the key's create revision)."""

    broker_id: str
    lease: int
    term: int


@dataclass(frozen=True, slots=True)
class TopicEntry:
    """A topic spec and the create revision of its key (its incarnation)."""

    spec: TopicSpec
    create_revision: int


class MetadataCache:
    """The ``meta/`` range at one revision; see the module docstring."""

    def __init__(self, layout: KeyLayout) -> None:
        self._layout = layout
        self.revision = 0
        self.brokers: dict[str, BrokerEntry] = {}
        self.controller: ControllerEntry | None = None
        self.topics: dict[str, TopicEntry] = {}
        self._partitions: dict[str, dict[int, PartitionState]] = {}
        self._broker_list: list[BrokerRecord] | None = None
        self._topic_list: list[TopicSpec] | None = None

    def reset(self, kvs: Iterable[KeyValue], revision: int) -> None:
        """Replace everything with a snapshot read at `revision`."""
        self.brokers.clear()
        self.controller = None
        self.topics.clear()
        self._partitions.clear()
        for kv in kvs:
            self._put(kv)
        self.revision = revision
        self._invalidate()

    def apply(self, puts_and_deletes: Iterable[tuple[bool, KeyValue]], revision: int) -> None:
        """Apply one watch batch: (True, kv) for a put, (False, kv) for a delete."""
        for is_put, kv in puts_and_deletes:
            if is_put:
                self._put(kv)
            else:
                self._delete(kv.key)
        self.revision = max(self.revision, revision)
        self._invalidate()

    # --- reads --------------------------------------------------------------

    def broker_list(self) -> list[BrokerRecord]:
        """Live brokers sorted by id (a new list)."""
        if self._broker_list is None:
            self._broker_list = sorted(
                (e.record for e in self.brokers.values()), key=lambda b: b.id
            )
        return list(self._broker_list)

    def topic_list(self) -> list[TopicSpec]:
        """Topics sorted by name (a new list)."""
        if self._topic_list is None:
            self._topic_list = sorted((e.spec for e in self.topics.values()), key=lambda t: t.name)
        return list(self._topic_list)

    def states(self, topic: str) -> list[PartitionState] | None:
        """Partition states of `topic` by partition, or None if there is no such topic."""
        if topic not in self.topics:
            return None
        by_index = self._partitions.get(topic, {})
        return [by_index[p] for p in sorted(by_index)]

    def state(self, topic: str, partition: int) -> PartitionState | None:
        """One partition state, or None."""
        if topic not in self.topics:
            return None
        return self._partitions.get(topic, {}).get(partition)

    def all_states(self) -> Iterator[PartitionState]:
        """Every partition state of every topic, by topic then partition."""
        for topic in sorted(self.topics):
            yield from self.states(topic) or ()

    def replica_load(self) -> Counter[str]:
        """How many partition replicas each broker holds."""
        load: Counter[str] = Counter()
        for by_index in self._partitions.values():
            for state in by_index.values():
                load.update(state.replicas)
        return load

    # --- applying keys ------------------------------------------------------

    def _invalidate(self) -> None:
        self._broker_list = None
        self._topic_list = None

    def _put(self, kv: KeyValue) -> None:
        meta = self._layout.parse_meta(kv.key)
        if meta is None:
            return
        try:
            match meta.kind:
                case "broker":
                    self.brokers[meta.name] = BrokerEntry(decode_broker(kv.value), kv.lease)
                case "controller":
                    broker_id = kv.value.decode()
                    self.controller = ControllerEntry(broker_id, kv.lease, kv.create_revision)
                case "topic":
                    spec = decode_topic(meta.name, kv.value)
                    self.topics[meta.name] = TopicEntry(spec, kv.create_revision)
                case "partition":
                    state = decode_partition(meta.name, meta.partition, kv.value, kv.mod_revision)
                    self._partitions.setdefault(meta.name, {})[meta.partition] = state
        except (BadValueError, UnicodeDecodeError) as exc:
            log.error("etcd.bad_value", key=kv.key.decode(errors="replace"), error=str(exc))
            self._delete(kv.key)

    def _delete(self, key: bytes) -> None:
        meta = self._layout.parse_meta(key)
        if meta is None:
            return
        match meta.kind:
            case "broker":
                self.brokers.pop(meta.name, None)
            case "controller":
                self.controller = None
            case "topic":
                self.topics.pop(meta.name, None)
            case "partition":
                by_index = self._partitions.get(meta.name)
                if by_index is not None:
                    by_index.pop(meta.partition, None)
                    if not by_index:
                        del self._partitions[meta.name]
