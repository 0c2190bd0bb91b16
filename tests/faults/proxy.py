"""A small asyncio TCP fault proxy: forward, cut, delay or drop, per direction.

One `FaultProxy` listens on a loopback port and forwards every connection to
one upstream address. The harness changes its behaviour while it runs:

- `cut()`: every open connection is aborted and new ones are accepted and
  closed at once (the host looks unreachable), until `heal()`;
- `set_fault(direction, "delay", seconds)`: bytes in that direction are held
  for that long (order kept) before they are written on;
- `set_fault(direction, "drop")`: bytes in that direction are read and thrown
  away (a one-way partition); a connection that lost bytes has a broken byte
  stream, so `heal()` aborts it and its peers reconnect;
- `heal()`: forward everything again.

`UP` is client to upstream (requests), `DOWN` upstream to client (answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Literal

UP = "up"
DOWN = "down"
DIRECTIONS = (UP, DOWN)
Mode = Literal["forward", "delay", "drop"]
CHUNK = 64 * 1024
QUEUE_CHUNKS = 64  # per direction and connection: reading stops when the writer lags
CONNECT_TIMEOUT_S = 2.0


@dataclass
class DirectionFault:
    """What happens to the bytes of one direction."""

    mode: Mode = "forward"
    delay_s: float = 0.0


@dataclass
class ProxyStats:
    """Counters of one proxy since it started."""

    connections: int = 0
    refused: int = 0
    aborted: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})
    dropped: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})


class _Connection:
    """One proxied connection: two pumps and two writers."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.writers = (client[1], upstream[1])
        self.lost: set[str] = set()  # directions that dropped bytes
        self.tasks: list[asyncio.Task[None]] = []
        for direction, reader, writer in (
            (UP, client[0], upstream[1]),
            (DOWN, upstream[0], client[1]),
        ):
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
            self.tasks.append(asyncio.create_task(self._pump(direction, reader, queue)))
            self.tasks.append(asyncio.create_task(self._write(writer, queue)))
        for task in self.tasks:
            task.add_done_callback(self._on_done)

    async def _pump(
        self,
        direction: str,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes]],
    ) -> None:
        stats = self.proxy.stats
        while True:
            data = await reader.read(CHUNK)
            if not data:
                await queue.put((0.0, b""))
                return
            fault = self.proxy.faults[direction]
            if fault.mode == "drop":
                self.lost.add(direction)
                stats.dropped[direction] += len(data)
                continue
            stats.bytes[direction] += len(data)
            due = time.monotonic() + fault.delay_s if fault.mode == "delay" else 0.0
            await queue.put((due, data))

    async def _write(
        self, writer: asyncio.StreamWriter, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the injected delay itself
            writer.write(data)
            await writer.drain()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        # Either side closing, or failing, ends the whole connection.
        if not task.cancelled():
            task.exception()  # retrieved: a reset peer is normal here
        self.abort()

    def abort(self) -> None:
        """Close both sides now and stop the pumps."""
        for writer in self.writers:
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()
        self.proxy.connections.discard(self)


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; faults are set while it runs (module doc)."""

    def __init__(
        self, name: str, upstream: str, port: int = 0, sock: socket.socket | None = None
    ) -> None:
        self.name = name
        self.upstream = upstream
        self.port = sock.getsockname()[1] if sock is not None else port
        self._sock = sock  # already bound and listening: the port cannot be taken meanwhile
        self.faults = {UP: DirectionFault(), DOWN: DirectionFault()}
        self.is_cut = False
        self.stats = ProxyStats()
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """host:port that clients dial."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        """Listen (on the given socket, else the port, else a free port)."""
        if self._sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=self._sock)
        else:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._abort_all()
        for task in list(self._handlers):
            task.cancel()

    def cut(self) -> None:
        """Abort every connection and refuse new ones until `heal`."""
        self.is_cut = True
        self._abort_all()

    def set_fault(self, direction: str, mode: Mode, delay_s: float = 0.0) -> None:
        """Delay or drop the bytes of one direction (`UP` or `DOWN`)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: {direction!r} is not {UP!r} or {DOWN!r}")
        if mode == "delay" and delay_s <= 0:
            raise ValueError(f"delay_s: must be > 0 for a delay, got {delay_s}")
        self.faults[direction] = DirectionFault(mode, delay_s)

    def heal(self) -> None:
        """Forward everything again; connections that lost bytes are aborted."""
        self.is_cut = False
        self.faults = {UP: DirectionFault(), DOWN: DirectionFault()}
        for conn in list(self.connections):
            if conn.lost:
                self.stats.aborted += 1
                conn.abort()

    @property
    def healthy(self) -> bool:
        """True when nothing is cut, delayed or dropped."""
        return not self.is_cut and all(f.mode == "forward" for f in self.faults.values())

    def _abort_all(self) -> None:
        for conn in list(self.connections):
            self.stats.aborted += 1
            conn.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.stats.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            host, _, port = self.upstream.rpartition(":")
            upstream = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            writer.transport.abort()  # as if the upstream refused
            return
        finally:
            self._handlers.discard(task)
        if self.is_cut:  # cut while connecting
            self.stats.refused += 1
            writer.transport.abort()
            upstream[1].transport.abort()
            return
        self.stats.connections += 1
        self.connections.add(_Connection(self, (reader, writer), upstream))


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free 127.0.0.1 port and listening: the port stays ours."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class ProxySet:
    """The proxies of a cluster by name; the harness cuts and heals them by name."""

    def __init__(self) -> None:
        self.proxies: dict[str, FaultProxy] = {}

    async def add(
        self, name: str, upstream: str, port: int = 0, sock: socket.socket | None = None
    ) -> FaultProxy:
        """Start a proxy called `name` in front of `upstream`."""
        if name in self.proxies:
            raise ValueError(f"proxy {name!r} exists")
        proxy = await FaultProxy(name, upstream, port, sock).start()
        self.proxies[name] = proxy
        return proxy

    def __getitem__(self, name: str) -> FaultProxy:
        return self.proxies[name]

    def heal_all(self) -> None:
        """Heal every proxy."""
        for proxy in self.proxies.values():
            proxy.heal()

    async def close(self) -> None:
        """Close every proxy."""
        for proxy in self.proxies.values():
            with contextlib.suppress(OSError):
                await proxy.close()
        self.proxies.clear()
