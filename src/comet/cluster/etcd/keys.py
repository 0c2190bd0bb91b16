"""The on-etcd format of Comet's cluster metadata: key layout and values.

Every key lives under one prefix (default ``/comet``). Path segments taken
from names (broker ids, topics, groups) are percent-encoded
(``urllib.parse.quote(name, safe="")``), so a ``/`` in a name can never
split a segment and one name is never a prefix of another's keys::

    {prefix}/cluster_id                  cluster id (32 hex chars); created once,
                                         in a txn on create_revision == 0
    {prefix}/meta/brokers/{id}           {"id": "b1", "address": "host:port"} and,
                                         when it differs, "peer_address" (the
                                         address brokers dial); bound to the
                                         broker's lease
    {prefix}/meta/controller             id of the controller broker (utf-8); bound
                                         to its lease, created in a txn on
                                         create_revision == 0; its create revision
                                         is the controller's term (fences its writes)
    {prefix}/meta/topics/{topic}         {"partitions": 3, "replication_factor": 2,
                                          "config": {"retention.ms": "..."}}
    {prefix}/meta/partitions/{topic}/{p} {"replicas": ["b1", "b2"], "leader": "b1",
                                          "leader_epoch": 0, "isr": ["b1", "b2"]}
                                         leader "" = offline; the key's mod revision
                                         is PartitionState.version
    {prefix}/offsets/{topic}/{group}/{p} next offset to consume (decimal ascii)
    {prefix}/producers/next_id           next producer id to hand out (decimal ascii)

Invariants:

- Everything under ``meta/`` is what every broker watches and caches; it
  changes rarely. Offsets and the producer counter are outside it, so
  commits never wake every broker's watch.
- A topic key and all its partition keys are created in one transaction and
  deleted in one transaction (with ``offsets/{topic}/``: offsets are keyed
  topic first so that one range delete drops them with the topic).
- Values are compact JSON (sorted keys) or decimal ascii; a value that does
  not decode is reported and ignored, never guessed at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from comet.cluster.coordinator import BrokerRecord, PartitionState, TopicSpec


class BadValueError(ValueError):
    """A stored value does not decode as what its key says it is."""


def _seg(name: str) -> str:
    return quote(name, safe="")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


@dataclass(frozen=True, slots=True)
class MetaKey:
    """What a key under ``meta/`` names: kind is broker, controller, topic or partition."""

    kind: str
    name: str = ""
    partition: int = -1


@dataclass(frozen=True)
class KeyLayout:
    """Builds and parses the keys of one Comet cluster under `prefix`."""

    prefix: str = "/comet"

    def __post_init__(self) -> None:
        if not self.prefix.strip("/"):
            raise ValueError(f"etcd prefix must name a directory, got {self.prefix!r}")
        object.__setattr__(self, "prefix", "/" + self.prefix.strip("/"))

    def _key(self, path: str) -> bytes:
        return f"{self.prefix}/{path}".encode()

    @property
    def cluster_id(self) -> bytes:
        """Key of the cluster id."""
        return self._key("cluster_id")

    @property
    def meta(self) -> bytes:
        """Prefix of everything brokers watch."""
        return self._key("meta/")

    @property
    def brokers(self) -> bytes:
        """Prefix of every broker registration."""
        return self._key("meta/brokers/")

    def broker(self, broker_id: str) -> bytes:
        """Registration key of one broker."""
        return self._key(f"meta/brokers/{_seg(broker_id)}")

    @property
    def controller(self) -> bytes:
        """The controller election key."""
        return self._key("meta/controller")

    def topic(self, topic: str) -> bytes:
        """Spec key of one topic."""
        return self._key(f"meta/topics/{_seg(topic)}")

    def partitions(self, topic: str) -> bytes:
        """Prefix of a topic's partition-state keys."""
        return self._key(f"meta/partitions/{_seg(topic)}/")

    def partition(self, topic: str, partition: int) -> bytes:
        """State key of one partition."""
        return self._key(f"meta/partitions/{_seg(topic)}/{partition}")

    @property
    def offsets_root(self) -> bytes:
        """Prefix of every committed offset."""
        return self._key("offsets/")

    def topic_offsets(self, topic: str) -> bytes:
        """Prefix of every committed offset of one topic (all groups)."""
        return self._key(f"offsets/{_seg(topic)}/")

    def group_offsets(self, topic: str, group: str) -> bytes:
        """Prefix of one group's committed offsets in one topic."""
        return self._key(f"offsets/{_seg(topic)}/{_seg(group)}/")

    def offset(self, topic: str, group: str, partition: int) -> bytes:
        """Key of one committed offset."""
        return self._key(f"offsets/{_seg(topic)}/{_seg(group)}/{partition}")

    @property
    def producer_next_id(self) -> bytes:
        """Key of the producer id counter."""
        return self._key("producers/next_id")

    def parse_meta(self, key: bytes) -> MetaKey | None:
        """What a key under ``meta/`` names, or None for a key Comet does not know."""
        parts = key[len(self.meta) :].decode("utf-8", "replace").split("/")
        match parts:
            case ["controller"]:
                return MetaKey("controller")
            case ["brokers", name] if name:
                return MetaKey("broker", unquote(name))
            case ["topics", name] if name:
                return MetaKey("topic", unquote(name))
            case ["partitions", name, index] if name and index.isdigit() and index.isascii():
                return MetaKey("partition", unquote(name), int(index))
        return None

    def parse_offset(self, key: bytes) -> tuple[str, str, int] | None:
        """(topic, group, partition) of an offset key, or None if it is not one."""
        parts = key[len(self.offsets_root) :].decode("utf-8", "replace").split("/")
        if len(parts) == 3 and parts[2].isdigit() and parts[2].isascii():
            return unquote(parts[0]), unquote(parts[1]), int(parts[2])
        return None


# --- values -------------------------------------------------------------


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _load(value: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except ValueError as exc:
        raise BadValueError(f"{what}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadValueError(f"{what}: expected an object, found {type(doc).__name__}")
    return doc


def _strings(doc: dict[str, Any], field: str, what: str) -> tuple[str, ...]:
    items = doc.get(field)
    if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
        raise BadValueError(f"{what}: {field!r} must be a list of strings")
    return tuple(items)


def _int(doc: dict[str, Any], field: str, what: str, minimum: int) -> int:
    value = doc.get(field)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise BadValueError(f"{what}: {field!r} must be an integer >= {minimum}, found {value!r}")
    return value


def encode_broker(broker: BrokerRecord) -> bytes:
    """Value of a broker's registration key."""
    doc = {"id": broker.id, "address": broker.address}
    if broker.peer_address and broker.peer_address != broker.address:
        doc["peer_address"] = broker.peer_address
    return _dump(doc)


def decode_broker(value: bytes) -> BrokerRecord:
    """BrokerRecord from a registration value."""
    doc = _load(value, "broker")
    broker_id, address = doc.get("id"), doc.get("address")
    peer_address = doc.get("peer_address", "")
    if not (isinstance(broker_id, str) and isinstance(address, str)):
        raise BadValueError("broker: 'id' and 'address' must be strings")
    if not isinstance(peer_address, str):
        raise BadValueError("broker: 'peer_address' must be a string")
    return BrokerRecord(broker_id, address, peer_address)


def encode_topic(spec: TopicSpec) -> bytes:
    """Value of a topic key (the name is in the key)."""
    return _dump(
        {
            "partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            "config": dict(spec.config),
        }
    )


def decode_topic(name: str, value: bytes) -> TopicSpec:
    """TopicSpec from a topic key's value."""
    what = f"topic {name!r}"
    doc = _load(value, what)
    config = doc.get("config", {})
    if not (
        isinstance(config, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in config.items())
    ):
        raise BadValueError(f"{what}: 'config' must map strings to strings")
    partitions = _int(doc, "partitions", what, 1)
    replication_factor = _int(doc, "replication_factor", what, 1)
    return TopicSpec(name, partitions, replication_factor, config)


def encode_partition(state: PartitionState) -> bytes:
    """Value of a partition-state key (topic, partition and version are in the key)."""
    return _dump(
        {
            "replicas": list(state.replicas),
            "leader": state.leader,
            "leader_epoch": state.leader_epoch,
            "isr": list(state.isr),
        }
    )


def decode_partition(topic: str, partition: int, value: bytes, version: int) -> PartitionState:
    """PartitionState from a partition key's value and mod revision."""
    what = f"partition {topic}/{partition}"
    doc = _load(value, what)
    leader = doc.get("leader")
    if not isinstance(leader, str):
        raise BadValueError(f"{what}: 'leader' must be a string")
    return PartitionState(
        topic=topic,
        partition=partition,
        replicas=_strings(doc, "replicas", what),
        leader=leader,
        leader_epoch=_int(doc, "leader_epoch", what, 0),
        isr=_strings(doc, "isr", what),
        version=version,
    )


def encode_int(value: int) -> bytes:
    """A counter or offset value."""
    return str(value).encode()


def decode_int(value: bytes, what: str) -> int:
    """A counter or offset from its decimal ascii value."""
    if not (value.isdigit() and value.isascii()):
        raise BadValueError(f"{what}: expected a decimal integer, found {value[:40]!r}")
    return int(value)
