"""The daemon under test: ``hublink run`` as a real subprocess.

    async def test_x(hub: HubEnv, daemons: Daemons) -> None:
        daemon = await daemons.start()         # hub's settings, as HUBLINK_* variables
        await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
        assert await daemon.terminate() == 0   # SIGTERM, exit code

Its log is JSON at debug level in a file, which :meth:`HublinkProcess.stop`
checks for the hub's token (no token may ever be logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hublink.config import Settings
from hublink.control import status_now
from support.cli import HUBLINK_COMMAND, make_child_env, run_hublink
from support.cloud import HubEnv
from support.polling import POLL, wait_until
from support.timing import scaled


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
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: Any = None

    async def start(self, *args: str) -> HublinkProcess:
        """Spawn the daemon (``args`` replace ``run``)."""
        env = make_child_env(self.settings, **self.extra_env)
        self._log_file = self.log_path.open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            *HUBLINK_COMMAND,
            *(args or ("run",)),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        return self

    @property
    def proc(self) -> asyncio.subprocess.Process:
        """The child process (to send it a signal, say).

        Raises:
            AssertionError: :meth:`start` was not awaited yet.
        """
        assert self._proc is not None, "the daemon was not started"
        return self._proc

    @property
    def pid(self) -> int:
        """The child's pid."""
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

    def crashes(self) -> list[dict[str, Any]]:
        """The log lines of tasks that crashed and were restarted (none, in a healthy run)."""
        return [e for e in self.log_events() if e["event"] == "task crashed; restarting it"]

    def run_cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``hublink ARGS`` run beside this daemon: its state and runtime dirs, its Cloud.

        ``env`` adds variables (``HUBLINK_OUTBOX__MAX_EVENT_SIZE``, say).
        """
        return run_hublink(
            *args,
            env=make_child_env(
                HUBLINK_STATE_DIR=str(self.settings.state_dir),
                HUBLINK_RUNTIME_DIR=str(self.settings.runtime_dir),
                HUBLINK_CLOUD_URL=self.settings.cloud_url,
                **env,
            ),
        )

    def status(self) -> dict[str, Any] | None:
        """``GET /v1/status`` from the running daemon, or None."""
        return status_now(self.settings.control_socket)

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the control API until ``predicate(status)`` holds; that status.

        Raises:
            AssertionError: the daemon exited meanwhile (the message shows its log).
            TimeoutError: ``timeout`` (scaled) seconds passed; the message shows the last status.
        """

        def check() -> dict[str, Any] | None:
            current = self.status()
            if current is not None and predicate(current):
                return current
            self.assert_running()
            return None

        try:
            found: dict[str, Any] = await wait_until(
                lambda: asyncio.to_thread(check), timeout, "the status", poll=POLL * 5
            )
        except TimeoutError as exc:
            raise TimeoutError(f"status never matched; last: {self.status()}") from exc
        return found

    def assert_running(self) -> None:
        """Fail with the child's log if it has exited."""
        if self.proc.returncode is not None:
            raise AssertionError(
                f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
            )

    async def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the child to exit; its code."""
        return await asyncio.wait_for(self.proc.wait(), scaled(timeout))

    async def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        """End the child whatever state it is in, then check the log for the token."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), scaled(10))
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        token = self.hub.token
        assert token not in self.log_text(), "the tunnel token appeared in the daemon's log"


class Daemons:
    """The daemons a test started; :meth:`start` another."""

    def __init__(self, hub: HubEnv) -> None:
        self.hub = hub
        self.started: list[HublinkProcess] = []

    async def start(
        self,
        hub: HubEnv | None = None,
        *args: str,
        settings: Settings | None = None,
        env: dict[str, str] | None = None,
    ) -> HublinkProcess:
        """Spawn ``hublink run`` (or ``args``) for ``hub`` (default: the test's ``hub``).

        ``settings`` replace the hub's own; ``env`` adds variables (``NOTIFY_SOCKET``, say).
        """
        process = HublinkProcess(
            hub or self.hub, settings=settings, env=env, name=f"daemon{len(self.started)}"
        )
        self.started.append(process)
        return await process.start(*args)

    async def stop_all(self) -> None:
        """Stop every daemon started, and check each log for the token."""
        for process in self.started:
            await process.stop()


@pytest.fixture
async def daemons(hub: HubEnv) -> AsyncIterator[Daemons]:
    """Daemons for the test; every one is stopped afterwards and its log checked for the token."""
    started = Daemons(hub)
    try:
        yield started
    finally:
        await started.stop_all()
