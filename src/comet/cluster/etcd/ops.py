"""Building blocks of etcd transactions: comparisons and operations.

Thin constructors over etcd's own protobuf messages (as shipped by aetcd),
so every transaction the coordinator sends reads like the etcd API it is.
"""

from __future__ import annotations

from aetcd import rpc


def put(key: bytes, value: bytes, lease: int = 0) -> rpc.RequestOp:
    """Put `value` at `key`, bound to `lease` when non-zero."""
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes, range_end: bytes = b"") -> rpc.RequestOp:
    """Delete `key`, or the range [key, range_end)."""
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=range_end))


def get(key: bytes, range_end: bytes = b"", keys_only: bool = False) -> rpc.RequestOp:
    """Read `key`, or the range [key, range_end)."""
    return rpc.RequestOp(
        request_range=rpc.RangeRequest(key=key, range_end=range_end, keys_only=keys_only)
    )


def created_at(key: bytes, revision: int) -> rpc.Compare:
    """True when `key`'s create revision is `revision` (0: the key does not exist)."""
    return rpc.Compare(
        key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=revision
    )


def modified_at(key: bytes, revision: int) -> rpc.Compare:
    """True when `key` was last modified at `revision` (0: the key does not exist)."""
    return rpc.Compare(
        key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=revision
    )


def exists(key: bytes) -> rpc.Compare:
    """True when `key` exists (its version is above 0)."""
    return rpc.Compare(key=key, result=rpc.Compare.GREATER, target=rpc.Compare.VERSION, version=0)
