"""Hooks (contract section 6): an operator's command run for a Cloud→Hub message.

The command is an argv list (never a shell); it reads the message as JSON on
stdin and finds its type in ``HUBLINK_MESSAGE_TYPE``. Each attempt runs in
its own process group with ``hooks_timeout``; on timeout the whole group is
killed (a hook's own children included) and reaped.

A hook is judged by its exit status, not by the end of its output: a hook
that starts a background job (``sleep 60 &``) and exits 0 has succeeded, even
though the job still holds its stderr open. Its stdin is an in-memory file
holding the message (never a pipe it might not read) and its stderr a pipe
read on the side, of which the last :data:`STDERR_CHARS` are kept. Process
groups left behind this way are killed when the daemon stops
(:meth:`HookRunner.kill_leftovers`): no hook process outlives hublink. A non-zero exit or a
timeout is logged with the hook's stderr and retried up to
:data:`MAX_RETRIES` times (contract section 6), :data:`MAX_ATTEMPTS` runs in
all. A command that cannot be started at all (missing, not executable) is
logged once and not retried: retrying cannot fix it.

Hooks run as tasks of the dispatcher, at most :data:`DEFAULT_CONCURRENCY` at
a time, so a hook that hangs never delays the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from hublink.config import Settings
from hublink.logs import mask_text
from hublink.metrics import Metrics
from hublink.retry import Backoff, Jitter

log = structlog.get_logger(__name__)

MAX_RETRIES = 3
MAX_ATTEMPTS = 1 + MAX_RETRIES
DEFAULT_CONCURRENCY = 4
#: How much of a hook's stderr a log line shows.
STDERR_CHARS = 2000
#: The longest pause between attempts; shorter when hooks_timeout is short (tests).
MAX_RETRY_DELAY = 1.0
#: How long stderr is read after the hook exited: what it wrote is in the pipe
#: already; a background child it left may hold the pipe open for ever.
STDERR_GRACE = 0.2
#: Bytes of stderr kept while reading (enough for STDERR_CHARS characters).
STDERR_BYTES = 4 * STDERR_CHARS
#: systemd variables meant for hublink only: a hook must not ping our watchdog.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: HUBLINK_* settings whose names say they hold a secret (tunnel.server_token).
_SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET")


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one run of a hook ended."""

    returncode: int | None
    timed_out: bool
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        """Exit status 0 within the timeout."""
        return not self.timed_out and self.returncode == 0

    @property
    def result(self) -> str:
        """``ok``, ``failed`` or ``timeout``: the label of ``hublink_hook_runs_total``."""
        return "timeout" if self.timed_out else "ok" if self.ok else "failed"


class HookRunner:
    """Runs the configured hooks with a timeout, retries and a concurrency limit."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        metrics: Metrics | None = None,
    ) -> None:
        self._hooks: Mapping[str, Sequence[str]] = settings.hooks
        #: Every run is counted by type and result (a private set when not given).
        self.metrics = metrics if metrics is not None else Metrics()
        self.timeout = settings.hooks_timeout
        # Pauses scale with the timeout so tests with tiny timeouts stay fast.
        self.retry_delay = min(MAX_RETRY_DELAY, settings.hooks_timeout / 10)
        self._slots = asyncio.Semaphore(concurrency)
        #: Process groups of hooks that exited and may have left children behind.
        self._groups: set[int] = set()

    def command_for(self, message_type: str) -> Sequence[str] | None:
        """The argv configured for ``message_type``, if any."""
        return self._hooks.get(message_type)

    async def run(self, message_type: str, payload: bytes) -> bool:
        """Run the hook of ``message_type`` with ``payload`` on stdin; whether it succeeded.

        Never raises for the hook's own failures (they are logged); only
        cancellation propagates, after the hook's processes are killed.
        """
        argv = self.command_for(message_type)
        if not argv:
            return True
        hook_log = log.bind(hook=argv[0], message_type=message_type)
        # No jitter: the retries are the box's own business.
        backoff = Backoff(self.retry_delay, MAX_RETRY_DELAY * 4, Jitter.NONE)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            async with self._slots:
                try:
                    outcome = await self._attempt(argv, message_type, payload)
                except OSError as err:
                    self.metrics.hook_ran(message_type, "failed")
                    hook_log.error(
                        "hook cannot be started; not retrying",
                        error=mask_text(err.strerror or str(err)),
                        hint="check the [hooks] command: an absolute path to an executable",
                    )
                    return False
            self.metrics.hook_ran(message_type, outcome.result)
            if outcome.ok:
                hook_log.info("hook succeeded", attempt=attempt, seconds=round(outcome.seconds, 3))
                return True
            self._log_failure(hook_log, outcome, attempt)
            if attempt < MAX_ATTEMPTS:
                await asyncio.sleep(backoff.next())
        hook_log.error("hook failed; giving up", attempts=MAX_ATTEMPTS)
        return False

    def _log_failure(self, hook_log: Any, outcome: Attempt, attempt: int) -> None:
        what = (
            f"hook timed out after {self.timeout:g} s and was killed"
            if outcome.timed_out
            else f"hook exited with status {outcome.returncode}"
        )
        hook_log.warning(
            what,
            attempt=attempt,
            of=MAX_ATTEMPTS,
            returncode=outcome.returncode,
            timed_out=outcome.timed_out,
            stderr=outcome.stderr,
        )

    def kill_leftovers(self) -> None:
        """Kill what exited hooks left running (their process groups): the daemon stops."""
        for pgid in sorted(self._groups):
            if _group_alive(pgid):
                log.info("stopping processes a hook left running", pgid=pgid)
                _kill_group(pgid)
        self._groups.clear()

    async def _attempt(self, argv: Sequence[str], message_type: str, payload: bytes) -> Attempt:
        started = time.monotonic()
        stdin = _payload_file(payload)
        read_end, write_end = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=write_end,
                env=hook_environment(message_type),
                # Its own process group, so a timeout kills the hook's children too.
                start_new_session=True,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            # The child has its copies; ours would keep the pipe open after it exits.
            os.close(stdin)
            os.close(write_end)
        stderr = _Tail(STDERR_BYTES)
        reading = asyncio.ensure_future(stderr.pump(read_end))
        timed_out = False
        try:
            try:
                # The exit decides, not the end of the output (see the module docstring).
                await asyncio.wait_for(proc.wait(), self.timeout)
            except TimeoutError:
                timed_out = True
                _kill_group(proc.pid)
                await proc.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reading), STDERR_GRACE)
        finally:
            if proc.returncode is None:
                # Cancelled (the daemon stops): no hook outlives hublink.
                _kill_group(proc.pid)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(proc.wait())
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            self._track(proc.pid)
        return Attempt(
            returncode=proc.returncode,
            timed_out=timed_out,
            stderr=_excerpt(bytes(stderr.data)),
            seconds=time.monotonic() - started,
        )

    def _track(self, pgid: int) -> None:
        """Remember ``pgid`` while processes of it live; forget the groups that ended."""
        self._groups.add(pgid)
        self._groups = {group for group in self._groups if _group_alive(group)}


class _Tail:
    """The last ``keep`` bytes read from a pipe (a hook's stderr)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.data = bytearray()

    async def pump(self, fd: int) -> None:
        """Read ``fd`` until end of file or cancellation; then close it."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while chunk := await reader.read(65536):
                self.data += chunk
                if len(self.data) > self.keep:
                    del self.data[: -self.keep]
        finally:
            transport.close()


def _payload_file(payload: bytes) -> int:
    """A file descriptor of an in-memory file holding ``payload``, at its start.

    A pipe would block hublink on a hook that does not read its stdin (or
    leaves a child holding it); a file never does, and costs no disk.
    """
    fd = os.memfd_create("hublink-hook-stdin", os.MFD_CLOEXEC)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hook_environment(message_type: str) -> dict[str, str]:
    """hublink's environment minus systemd's and secret variables, plus ``HUBLINK_MESSAGE_TYPE``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _PRIVATE_ENV and not _is_secret_setting(key)
    }
    env["HUBLINK_MESSAGE_TYPE"] = message_type
    return env


def _is_secret_setting(name: str) -> bool:
    # HUBLINK_TUNNEL__SERVER_TOKEN would be readable in the hook's /proc/PID/environ.
    # The other HUBLINK_* stay: a hook may run `hublink send` with the daemon's settings.
    upper = name.upper()
    return upper.startswith("HUBLINK_") and any(word in upper for word in _SECRET_WORDS)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _excerpt(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    if len(text) > STDERR_CHARS:
        # The end of stderr usually says what went wrong.
        text = "…" + text[-STDERR_CHARS:]
    return mask_text(text)
