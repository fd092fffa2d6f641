"""Helpers for tests that run ``hublink run`` as a real subprocess.

    daemon = HublinkProcess(hub)          # hub: a fixtures_devcloud.HubEnv
    await daemon.start()
    await daemon.wait_for(lambda: ...)
    code = await daemon.terminate()        # SIGTERM, exit code

Settings reach the child through ``HUBLINK_*`` variables; its log is JSON at
debug level in a file, which :meth:`HublinkProcess.stop` checks for the hub's
token (no token may ever be logged). :class:`TcpProxy` sits between the
daemon and the Cloud to count connections and to blackhole a link without
closing it (a half-open connection, as a dead NAT leaves behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hublink.config import Settings
from hublink.control import request, status_now
from support.devcloud import HubEnv
from support.polling import POLL


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """``HUBLINK_*`` variables that rebuild ``settings`` in a child process."""
    env = {
        "HUBLINK_CLOUD_URL": settings.cloud_url,
        "HUBLINK_STATE_DIR": str(settings.state_dir),
        "HUBLINK_RUNTIME_DIR": str(settings.runtime_dir),
        "HUBLINK_LOG__LEVEL": "debug",
        "HUBLINK_LOG__FORMAT": "json",
    }
    env["HUBLINK_HUB__LOCAL_PORT"] = str(settings.hub.local_port)
    env["HUBLINK_OUTBOX__MAX_PENDING"] = str(settings.outbox.max_pending)
    for key, value in settings.tunnel.model_dump().items():
        if value is not None and key != "server_token":
            env[f"HUBLINK_TUNNEL__{key.upper()}"] = (
                str(value).lower() if key == "enabled" else str(value)
            )
    if settings.hooks:
        env["HUBLINK_HOOKS"] = json.dumps({k: list(v) for k, v in settings.hooks.items()})
        env["HUBLINK_HOOKS_TIMEOUT"] = str(settings.hooks_timeout)
    if settings.backup.database is not None:
        env["HUBLINK_BACKUP__DATABASE"] = str(settings.backup.database)
    if settings.backup.schedule is not None:
        env["HUBLINK_BACKUP__SCHEDULE"] = settings.backup.schedule
        env["HUBLINK_BACKUP__SCHEDULE_JITTER"] = str(settings.backup.schedule_jitter)
    if settings.metrics.listen is not None:
        env["HUBLINK_METRICS__LISTEN"] = settings.metrics.listen
    if settings.tls.ca_file is not None:
        env["HUBLINK_TLS__CA_FILE"] = str(settings.tls.ca_file)
    for key, value in settings.websocket.model_dump().items():
        env[f"HUBLINK_WEBSOCKET__{key.upper()}"] = str(value)
    env["HUBLINK_WEB__ENABLED"] = str(settings.web.enabled).lower()
    env["HUBLINK_WEB__LISTEN"] = settings.web.listen
    if settings.web.language is not None:
        env["HUBLINK_WEB__LANGUAGE"] = settings.web.language
    env.update(extra)
    return env


@dataclass(frozen=True)
class CliRun:
    """How a ``hublink`` command ended."""

    code: int
    stdout: str
    stderr: str


class HublinkProcess:
    """One ``python -m hublink run`` child with its own environment and log file."""

    def __init__(
        self,
        hub: HubEnv,
        *,
        settings: Settings | None = None,
        env: dict[str, str] | None = None,
        name: str = "daemon",
    ) -> None:
        self.hub = hub
        self.settings = settings or hub.settings
        self.extra_env = env or {}
        self.log_path = self.settings.state_dir.parent / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._log_file: Any = None

    def env(self) -> dict[str, str]:
        """The child's environment: this one without HUBLINK_* and proxies, plus the settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
        env["HUBLINK_CONFIG"] = os.environ["HUBLINK_CONFIG"]
        for key in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "NO_PROXY",
            "no_proxy",
        ):
            env.pop(key, None)
        env.update(settings_env(self.settings, **self.extra_env))
        return env

    async def start(self, *args: str) -> HublinkProcess:
        """Spawn the daemon (``args`` replace ``run``)."""
        env = self.env()
        self._log_file = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hublink",
            *(args or ("run",)),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        return self

    async def cli(self, *args: str, stdin: str = "", timeout: float = 60.0) -> CliRun:
        """Run ``hublink ARGS`` beside the daemon, with its settings (another shell)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hublink",
            *args,
            env=self.env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
        assert proc.returncode is not None
        return CliRun(proc.returncode, out.decode(), err.decode())

    async def call(
        self, method: str, url: str, body: Any = None, timeout: float = 60.0
    ) -> tuple[int, Any]:
        """One request to the daemon's control API; ``(status, JSON)``."""
        socket_path = self.settings.control_socket
        answer = await asyncio.to_thread(request, socket_path, method, url, body, timeout=timeout)
        assert answer is not None, f"the daemon did not answer {method} {url}"
        return answer

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        """Everything the child wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        """The child's JSON log lines, parsed (other lines skipped)."""
        events = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def status(self) -> dict[str, Any] | None:
        """``GET /v1/status`` from the running daemon, or None."""
        return status_now(self.settings.control_socket)

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the control API until ``predicate(status)`` holds; that status."""

        def check() -> dict[str, Any] | None:
            current = self.status()
            return current if current is not None and predicate(current) else None

        deadline = time.monotonic() + timeout
        while True:
            current = await asyncio.to_thread(check)
            if current is not None:
                return current
            self.assert_running()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"status never matched; last: {self.status()}")
            await asyncio.sleep(POLL * 5)

    def assert_running(self) -> None:
        """Fail with the child's log if it has exited."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(
                f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
            )

    async def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the child to exit; its code."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        """End the child whatever state it is in, then check the log for the token."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        token = self.hub.token
        assert token not in self.log_text(), "the tunnel token appeared in the daemon's log"


@pytest.fixture
async def spawn(hub_settings: HubEnv) -> AsyncIterator[Callable[..., Any]]:
    """Start daemons for the test (``await spawn(hub=None, settings=None, env=None)``).

    Every one is stopped afterwards, and its log checked for the token.
    """
    started: list[HublinkProcess] = []

    async def start(hub: HubEnv | None = None, *args: str, **kwargs: Any) -> HublinkProcess:
        process = HublinkProcess(hub or hub_settings, name=f"daemon{len(started)}", **kwargs)
        started.append(process)
        return await process.start(*args)

    try:
        yield start
    finally:
        for process in started:
            await process.stop()


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
