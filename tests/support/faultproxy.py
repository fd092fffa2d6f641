"""A loopback TCP relay between hublink and the Cloud that breaks the network on demand.

    proxy = await FaultProxy(cloud.port).start()
    settings = hub.settings.model_copy(update={"cloud_url": proxy.url})
    ...
    proxy.blackhole()            # the live connections go silent: no FIN, no RST
    proxy.heal()                 # new connections are relayed again

Faults on the connections that are open now:

* :meth:`blackhole`: every byte is dropped both ways and nothing is closed (a
  dead NAT or a pulled cable far away);
* :meth:`half_open`: the Cloud's side is reset, the hub's side stays open and
  silent (the Cloud rebooted behind a stateful firewall);
* :meth:`reset_mid_frame`: the next chunk either way is cut in half, then both
  sides get a TCP RST (``SO_LINGER`` 0);

and on the connections to come, until :meth:`heal`:

* ``latency`` seconds added to every chunk, in each direction;
* :meth:`refuse_handshakes`: the request reaches the Cloud, but only the status
  line of its answer comes back, then nothing (a handshake that never completes);
* :meth:`go_silent`: TCP is accepted, the request is read, nothing ever answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any


class Mode(enum.Enum):
    """What the proxy does with a new connection."""

    RELAY = "relay"
    STALL_HANDSHAKE = "stall handshake"
    SILENT = "silent"


@dataclass
class _Pipe:
    """One relayed connection: the hub's side and the Cloud's side."""

    number: int
    down: asyncio.StreamWriter  # to the hub
    up: asyncio.StreamWriter | None  # to the Cloud (None when nothing is relayed)
    dropping: bool = False
    cut_next: bool = False
    #: Directions still being relayed; the pipe is forgotten at 0.
    open_directions: int = 2


class FaultProxy:
    """Relays 127.0.0.1:<port> to ``target_port`` and injects network faults."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = Mode.RELAY
        #: Seconds added to every chunk, each way, on connections opened from now on.
        self.latency = 0.0
        #: Connections accepted so far.
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pipes: dict[int, _Pipe] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port hublink connects to."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """A ``cloud_url`` that goes through the proxy."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes.values()):
            self._reset(pipe)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # --- faults on the open connections ----------------------------------------

    def blackhole(self) -> int:
        """Drop every byte of the open connections from now on, closing nothing; how many."""
        for pipe in self._pipes.values():
            pipe.dropping = True
        return len(self._pipes)

    def half_open(self) -> int:
        """Reset the Cloud's side of the open connections; the hub's side stays open, silent."""
        for pipe in self._pipes.values():
            pipe.dropping = True
            if pipe.up is not None:
                _abort_with_rst(pipe.up)
        return len(self._pipes)

    def reset_mid_frame(self) -> int:
        """Cut the next chunk of each open connection in half, then RST both sides; how many."""
        for pipe in self._pipes.values():
            pipe.cut_next = True
        return len(self._pipes)

    # --- faults on the connections to come ---------------------------------------

    def refuse_handshakes(self) -> None:
        """New connections: the Cloud's answer stops after its status line."""
        self.mode = Mode.STALL_HANDSHAKE

    def go_silent(self) -> None:
        """New connections: accepted, read, never answered (the Cloud is never reached)."""
        self.mode = Mode.SILENT

    def heal(self) -> None:
        """New connections are relayed again, without added latency.

        Connections broken by a fault stay broken, as they would after a real
        outage: only a new connection gets through.
        """
        self.mode = Mode.RELAY
        self.latency = 0.0

    # --- relaying ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        number = self.accepted
        mode, latency = self.mode, self.latency
        if mode is Mode.SILENT:
            pipe = _Pipe(number, writer, None)
            self._pipes[number] = pipe
            await self._swallow(pipe, reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            # The Cloud is down: the hub sees its connection reset, as without a proxy.
            _abort_with_rst(writer)
            return
        pipe = _Pipe(number, writer, up_writer)
        self._pipes[number] = pipe
        stall = mode is Mode.STALL_HANDSHAKE
        for src, dst, cut_answer in ((reader, up_writer, False), (up_reader, writer, stall)):
            # Chunks are queued with their due time: latency delays them without reordering.
            queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
            self._spawn(self._read(pipe, src, queue, latency, cut_answer))
            self._spawn(self._deliver(pipe, queue, dst))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _swallow(self, pipe: _Pipe, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass
        pipe.down.close()
        self._forget(pipe)

    async def _read(
        self,
        pipe: _Pipe,
        src: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        latency: float,
        stall: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if stall:
                    # Only the status line of the Cloud's answer, then silence.
                    line, found, _ = data.partition(b"\r\n")
                    if found:
                        queue.put_nowait((time.monotonic() + latency, line + found))
                        queue.put_nowait((time.monotonic() + latency, None))
                        stall = False
                        continue
                queue.put_nowait((time.monotonic() + latency, data))
        queue.put_nowait((time.monotonic() + latency, b""))

    async def _deliver(
        self,
        pipe: _Pipe,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        dst: asyncio.StreamWriter,
    ) -> None:
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    pipe.dropping = True  # the rest of the handshake's answer never comes
                if pipe.dropping or data is None:
                    continue  # swallowed; and an EOF is never passed on (no FIN)
                if not data:
                    dst.close()
                    pipe.open_directions -= 1
                    if pipe.open_directions == 0:
                        self._forget(pipe)
                    return
                if pipe.cut_next:
                    dst.write(data[: max(1, len(data) // 2)])
                    await dst.drain()
                    self._reset(pipe)
                    return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            self._reset(pipe)

    def _reset(self, pipe: _Pipe) -> None:
        pipe.dropping = True
        _abort_with_rst(pipe.down)
        if pipe.up is not None:
            _abort_with_rst(pipe.up)
        self._forget(pipe)

    def _forget(self, pipe: _Pipe) -> None:
        self._pipes.pop(pipe.number, None)


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close at once with a TCP RST: ``SO_LINGER`` on with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
