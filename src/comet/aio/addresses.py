"""Broker addresses: parsing bootstrap lists and resolving advertised ones."""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_PORT = 6174
_ANY_HOSTS = {"", "0.0.0.0", "[::]", "::"}


def parse_addresses(addresses: str | Sequence[str]) -> list[str]:
    """Split "a:6174,b:6174" (or a list) into host:port strings; ValueError on a bad one.

    A bare host gets the default port 6174; ":6174" means localhost.
    """
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    out = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, str(DEFAULT_PORT)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap address {item!r}: port must be 1-65535")
        out.append(f"{host or 'localhost'}:{port}")
    if not out:
        raise ValueError("bootstrap addresses: at least one host:port is required")
    return out


def resolve_advertised(advertised: str, bootstrap_host: str) -> str:
    """Make a broker's advertised address dialable: ':6174' means the bootstrap host."""
    host, _, port = advertised.rpartition(":")
    if host in _ANY_HOSTS:
        return f"{bootstrap_host}:{port}"
    return advertised


def host_of(address: str) -> str:
    """The host part of host:port."""
    return address.rpartition(":")[0]
