"""The fault proxy against an echo server: forward, delay, drop, cut and heal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.faults.proxy import DOWN, UP, FaultProxy

TIMEOUT_S = 5.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    """A proxy in front of an echo server."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = await FaultProxy("echo", f"127.0.0.1:{port}").start()
    try:
        yield p
    finally:
        await p.close()
        server.close()
        await server.wait_closed()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _roundtrip(proxy: FaultProxy, payload: bytes = b"ping") -> bytes:
    reader, writer = await _connect(proxy)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT_S)
    finally:
        writer.close()


async def test_forwards_both_ways_and_counts_bytes(proxy: FaultProxy) -> None:
    assert await _roundtrip(proxy, b"x" * 100_000) == b"x" * 100_000
    assert proxy.stats.connections == 1
    assert proxy.stats.bytes[UP] == 100_000
    assert proxy.stats.bytes[DOWN] == 100_000


async def test_delay_holds_bytes_of_one_direction(proxy: FaultProxy) -> None:
    proxy.set_fault(DOWN, "delay", 0.3)
    started = time.monotonic()
    assert await _roundtrip(proxy) == b"ping"
    assert time.monotonic() - started >= 0.3
    proxy.heal()
    started = time.monotonic()
    assert await _roundtrip(proxy) == b"ping"
    assert time.monotonic() - started < 0.3


async def test_drop_loses_one_direction_and_heal_resets_the_connection(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    proxy.set_fault(DOWN, "drop")
    writer.write(b"lost")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(10), 0.3)
    assert proxy.stats.bytes[UP] == 4  # the request went through, the answer was dropped
    assert proxy.stats.dropped[DOWN] == 4
    proxy.heal()
    assert await asyncio.wait_for(reader.read(10), TIMEOUT_S) == b""  # aborted by the heal
    writer.close()
    assert await _roundtrip(proxy) == b"ping"


async def test_cut_closes_open_connections_and_refuses_new_ones_until_heal(
    proxy: FaultProxy,
) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S) == b"a"
    proxy.cut()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S)
    writer.close()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _roundtrip(proxy)
    assert proxy.stats.refused >= 1
    assert not proxy.healthy
    proxy.heal()
    assert proxy.healthy
    assert await _roundtrip(proxy) == b"ping"


async def test_an_unreachable_upstream_closes_the_client_connection() -> None:
    async with asyncio.timeout(TIMEOUT_S):
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        proxy = await FaultProxy("dead", f"127.0.0.1:{port}").start()
        try:
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await _roundtrip(proxy)
        finally:
            await proxy.close()
