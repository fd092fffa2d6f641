"""Loopback networking for tests: listeners that hang up, a relay that can stall.

Every address is on 127.0.0.1 (free ports: :mod:`hublink.devcloud.ports`).
:class:`TcpProxy` sits between the daemon and the Cloud to count connections
and to blackhole a link without closing it (a half-open connection, as a dead
NAT leaves behind), or acts as an HTTP ``CONNECT`` proxy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest


class Listeners:
    """TCP listeners on 127.0.0.1: a stand-in frps port, the Hub application's port."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []

    async def open(self) -> int:
        """A new listener that accepts and hangs up; its port."""

        async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def listeners() -> AsyncIterator[Listeners]:
    """Open :class:`Listeners` for the test; all closed afterwards."""
    opened = Listeners()
    yield opened
    for server in opened.servers:
        server.close()
        await server.wait_closed()


class TcpProxy:
    """A loopback TCP relay to ``target_port`` that counts connections and can blackhole them."""

    def __init__(
        self, target_port: int, *, tls: ssl.SSLContext | None = None, http_connect: bool = False
    ) -> None:
        self.target_port = target_port
        self.tls = tls
        #: Act as an HTTP proxy: expect ``CONNECT host:port``, then relay to target_port.
        self.http_connect = http_connect
        self.connect_requests: list[str] = []
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._blackholed: set[int] = set()
        self._pipes: list[tuple[int, asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """A cloud_url that goes through the proxy (``https://localhost:…`` with TLS)."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        if self.tls is not None:
            return f"https://localhost:{port}"
        return f"http://127.0.0.1:{port}"

    async def start(self) -> TcpProxy:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    def blackhole(self) -> None:
        """From now on, drop every byte of the current connections, without closing them."""
        self._blackholed.update(conn_id for conn_id, _, _ in self._pipes)

    async def close(self) -> None:
        """Close everything."""
        if self._server is not None:
            self._server.close()
        for _, a, b in self._pipes:
            a.close()
            b.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn_id = self.accepted
        if self.http_connect:
            head = await reader.readuntil(b"\r\n\r\n")
            self.connect_requests.append(head.split(b"\r\n", 1)[0].decode())
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._pipes.append((conn_id, writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(conn_id, src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, conn_id: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await src.read(65536):
                if conn_id in self._blackholed:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if conn_id not in self._blackholed:
                dst.close()
