"""The tunnel's watchdog: keeps exactly one healthy frpc alive while the daemon runs.

One pass of :meth:`TunnelSupervisor.run` is a straight line: write
``frpc.toml`` → start frpc → watch it (its log lines, its admin API) → reap
it → wait out the backoff → again. The child can never outlive hublink: it is
stopped in ``finally`` (SIGTERM, a grace period, SIGKILL, reap), and the
kernel kills it too if hublink dies without running any ``finally``
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import random
import re
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hublink import logs
from hublink.config import Settings
from hublink.credentials import Credentials
from hublink.live import LiveState, TunnelStateName
from hublink.metrics import Metrics
from hublink.retry import Backoff, Jitter
from hublink.tunnel.config import PROXY_NAME, new_admin_password, write_config

if TYPE_CHECKING:
    from hublink.tunnel.admin import AdminAPI

log = structlog.get_logger(__name__)

#: Seconds frpc gets to exit after SIGTERM before it is killed.
STOP_GRACE = 5.0
#: A child that stayed ``running`` this long resets the restart backoff.
HEALTHY_RESET = 60.0
#: Seconds between two questions to frpc's admin API while the tunnel runs. frpc
#: logs every change it sees (a lost session, a refused proxy), and each of its
#: lines brings the next question forward: the poll only catches what it did not
#: say. (At 1 s the polling was most of an idle box's CPU, for hublink and frpc.)
POLL_INTERVAL = 30.0
#: The first admin API question after a start or a drop; doubled up to POLL_INTERVAL.
FIRST_POLL = 0.02
#: After a line from frpc, quick questions (doubling from FIRST_POLL) up to this delay.
SETTLE_POLLS_UNTIL = 1.0
#: Patience for one admin API answer (it is on 127.0.0.1).
ADMIN_TIMEOUT = 2.0
#: frpc's lines can carry long error chains; a generous limit keeps readline working.
LINE_LIMIT = 1024 * 1024

INSTALL_HINT = (
    "install frp 0.52 or later (https://github.com/fatedier/frp/releases) "
    "and set tunnel.frpc_path to its frpc binary"
)

#: Variables the child must not inherit: systemd's notify/watchdog protocol is
#: hublink's alone, socket activation belongs to hublink, and HUBLINK_* may
#: hold tunnel.server_token (``/proc/PID/environ``).
_SCRUBBED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS")
_SCRUBBED_PREFIXES = ("HUBLINK_", "LISTEN_FDNAMES")

_LEVELS = {"E": "error", "W": "warning", "I": "info", "D": "debug", "T": "debug"}
_LINE = re.compile(
    r"^(?:\S+ \S+ )?\[(?P<level>[EWIDT])\] \[(?P<source>[^\]]+)\] "
    r"(?:\[(?P<run_id>[0-9a-f]{8,})\] )?(?P<message>.*)$"
)
_LOGIN_FAILED = re.compile(r"(?:login to server failed|connect to server error): (?P<reason>.+)$")
_PROXY_FAILED = re.compile(r"start error: (?P<reason>.+)$")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class FrpcLine:
    """One line of frpc's output, split into its parts."""

    level: str
    message: str
    source: str | None = None
    run_id: str | None = None

    def fields(self) -> dict[str, str]:
        """``source`` and ``run_id``, when the line has them, as log fields."""
        found = {"source": self.source, "run_id": self.run_id}
        return {key: value for key, value in found.items() if value}


def parse_line(text: str) -> FrpcLine:
    """Split ``2025-01-01 10:00:00.000 [I] [client/service.go:317] [runid] text``.

    A line in another shape (a Go panic, say) is kept whole at warning level.
    """
    match = _LINE.match(text)
    if match is None:
        return FrpcLine(level="warning", message=text)
    return FrpcLine(
        level=_LEVELS[match["level"]],
        message=match["message"],
        source=match["source"],
        run_id=match["run_id"],
    )


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment frpc starts with: ours, minus what is hublink's alone."""
    source = os.environ if environ is None else environ
    return {
        key: value
        for key, value in source.items()
        if key not in _SCRUBBED_ENV and not key.startswith(_SCRUBBED_PREFIXES)
    }


def _load_prctl() -> Callable[..., int] | None:
    # Looked up once in the parent: the child between fork and exec must not
    # load libraries.
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_prctl = _load_prctl()


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when hublink dies.

    Even a ``kill -9`` of hublink, which runs no ``finally``, then takes frpc
    with it. If hublink died between fork and prctl, the signal would never
    come, so the child checks its parent and kills itself.
    """

    # The kernel ties the signal to the thread that forked: asyncio forks in
    # the event loop's thread, which lives exactly as long as the daemon.
    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def describe_exit(code: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def resolve_frpc(frpc_path: str) -> str | None:
    """The executable ``tunnel.frpc_path`` names (on ``PATH`` if bare), or None."""
    return shutil.which(frpc_path)


class TunnelSupervisor:
    """Runs frpc for the hub, restarts it when it dies, reports its state in ``live``.

    Args:
        settings: the daemon's settings (``tunnel.*``, ``hub.local_port``).
        creds: the hub's credentials (``hub_id``, ``tunnel_port``, token).
        live: where the state, pid, restart count and last error go.
        grace: seconds between SIGTERM and SIGKILL when stopping frpc.
        healthy_reset: seconds of ``running`` after which the backoff resets.
        poll_interval: seconds between two admin API checks.
        rng: jitter source, for tests.
        metrics: where restarts are counted (a private set when not given); ``tunnel_up``
            follows ``live``.
    """

    def __init__(
        self,
        settings: Settings,
        creds: Credentials,
        live: LiveState,
        *,
        grace: float = STOP_GRACE,
        healthy_reset: float = HEALTHY_RESET,
        poll_interval: float = POLL_INTERVAL,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics(live=live)
        self.creds = creds
        self.live = live
        self.grace = grace
        self.healthy_reset = healthy_reset
        self.poll_interval = poll_interval
        self._backoff = Backoff(
            settings.tunnel.restart_min,
            settings.tunnel.restart_max,
            Jitter.EQUAL,
            rand=(rng or random.Random()).random,  # noqa: S311 - jitter, not a secret
        )
        self._spawned = 0
        self._running_since: float | None = None
        self._last_complaint: str | None = None
        self._last_error_line: str | None = None
        # Set by each of frpc's own lines: something may have changed, ask now.
        self._news = asyncio.Event()
        logs.register_secret(creds.tunnel_token.get_secret_value())
        if settings.tunnel.server_token is not None:
            logs.register_secret(settings.tunnel.server_token.get_secret_value())

    async def run(self) -> None:
        """Keep frpc running until cancelled; then stop it and reap it."""
        if not self.settings.tunnel.enabled:
            self._set("disabled", pid=None)
            return
        try:
            while True:
                delay = await self._one_round()
                await asyncio.sleep(delay)
        finally:
            self._set("stopped", pid=None)

    async def _one_round(self) -> float:
        """Start frpc once and watch it until it exits; the delay before the next round."""
        frpc = resolve_frpc(self.settings.tunnel.frpc_path)
        if frpc is None:
            return self._failed(
                f"frpc not found or not executable: {self.settings.tunnel.frpc_path}"
            )
        password = new_admin_password()
        logs.register_secret(password)
        try:
            path = await asyncio.to_thread(write_config, self.settings, self.creds, password)
        except OSError as err:
            return self._failed(
                f"cannot write the frpc config: {err}",
                hint=f"make {self.settings.state_dir} writable by hublink, with free space",
            )
        try:
            proc = await self._spawn(frpc, path)
        except OSError as err:
            return self._failed(f"cannot start {frpc}: {err.strerror or err}")
        try:
            code = await self._watch(proc, password)
        finally:
            await self._stop(proc)
            # A new password comes with every start: forgetting the old one keeps
            # the masking list (walked for every log event) short in a crash loop.
            logs.forget_secret(password)
        return self._after_exit(proc.pid, code)

    def _failed(self, problem: str, hint: str = INSTALL_HINT) -> float:
        message = f"{problem}; {hint}"
        log.error("tunnel failed", error=message, retry_in=self.settings.tunnel.restart_max)
        self._set("failed", pid=None, last_error=message)
        return self.settings.tunnel.restart_max

    async def _spawn(self, frpc: str, path: Path) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            frpc,
            "-c",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(),
            limit=LINE_LIMIT,
            preexec_fn=die_with_parent(os.getpid()),
            # Its own process group: a Ctrl-C on hublink's terminal reaches
            # hublink only, which then stops frpc in order.
            process_group=0,
        )
        restarted = self._spawned > 0
        self._spawned += 1
        self._running_since = None
        self._last_complaint = None
        self._last_error_line = None
        fields: dict[str, Any] = {"pid": proc.pid}
        if restarted:
            fields["restarts"] = self.live.tunnel.restarts + 1
            self.metrics.tunnel_restarted()
        log.info("frpc started", pid=proc.pid, frpc=frpc, config=str(path))
        self._set("starting", **fields)
        return proc

    async def _watch(self, proc: asyncio.subprocess.Process, password: str) -> int:
        """Relay frpc's output and health until it exits."""
        assert proc.stdout is not None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._relay(proc.stdout, proc.pid))
            poller = tasks.create_task(self._poll(password, proc.pid))
            code = await proc.wait()
            poller.cancel()
        return code

    def _after_exit(self, pid: int, code: int) -> float:
        """Record a death; the backoff before the next start."""
        loop = asyncio.get_running_loop()
        if self._running_since is not None and (
            loop.time() - self._running_since >= self.healthy_reset
        ):
            self._backoff.reset()
        delay = self._backoff.next()
        problem = f"frpc (pid {pid}) {describe_exit(code)}"
        last = self._last_complaint or self._last_error_line
        if last:
            problem += f"; last error: {last}"
        log.warning("frpc died", pid=pid, returncode=code, restart_in=round(delay, 3))
        self._set("backoff", pid=None, last_error=logs.mask_text(problem))
        return delay

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM, wait up to the grace period, SIGKILL, reap; every death logged."""
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(self.grace):
                code = await proc.wait()
            log.info("frpc stopped", pid=proc.pid, returncode=code)
        except TimeoutError:
            log.warning("frpc ignored SIGTERM; killing it", pid=proc.pid, grace=self.grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            log.info("frpc killed", pid=proc.pid, returncode=code)

    async def _relay(self, stream: asyncio.StreamReader, pid: int) -> None:
        """Re-log each of frpc's lines through structlog, and learn its errors from them."""
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                log.warning("frpc wrote an overlong line; dropped", pid=pid)
                continue
            if not raw:
                return
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                self._relay_line(parse_line(text), pid)

    def _relay_line(self, line: FrpcLine, pid: int) -> None:
        level = line.level
        # Our own health checks would fill the log at info level every second.
        if line.source is not None and line.source.startswith("client/admin_api.go"):
            level = "debug"
        getattr(log, level)(logs.mask_text(line.message), frpc_pid=pid, **line.fields())
        if level != "debug":
            self._news.set()
        login = _LOGIN_FAILED.search(line.message)
        if login:
            where = f"{self.settings.frps_addr}:{self.settings.tunnel.server_port}"
            self._complain(f"cannot log in to frps at {where}: {login['reason']}")
            return
        proxy = _PROXY_FAILED.search(line.message)
        if proxy:
            self._complain(f"frps refused the tunnel: {proxy['reason']}")
        elif line.level == "error" or line.source is None:
            # Why frpc is about to exit, most of the time (a bad config, a panic).
            self._last_error_line = logs.mask_text(line.message)
            port = self.settings.tunnel.admin_port
            if f"127.0.0.1:{port}: bind: address already in use" in line.message:
                self._last_error_line = (
                    f"tunnel.admin_port {port} is already in use on 127.0.0.1; "
                    "set tunnel.admin_port to a free port"
                )

    def _complain(self, problem: str) -> None:
        self._last_complaint = logs.mask_text(problem)
        self._set(self.live.tunnel.state, last_error=self._last_complaint)

    async def _poll(self, password: str, pid: int) -> None:
        """Ask frpc's admin API whether the proxy is running.

        Every ``poll_interval`` while it runs, and soon after each line frpc logs;
        quicker while it is not running, so that ``running`` shows within a few
        tens of milliseconds of being true.
        """
        # Imported at the first poll, not with this module: frpc starts without
        # waiting for aiohttp (a third of the daemon's cold start), which the
        # daemon is loading in a worker thread meanwhile (hublink.localservers).
        from hublink.tunnel.admin import AdminAPI

        api = AdminAPI(self.settings.tunnel.admin_port, password, ADMIN_TIMEOUT)
        try:
            await self._poll_with(api, pid)
        finally:
            await api.close()

    async def _poll_with(self, api: AdminAPI, pid: int) -> None:
        delay = FIRST_POLL / 2
        # After a line from frpc, a few quick questions while the change settles.
        quick: float | None = None
        while True:
            was_running = self.live.tunnel.state == "running"
            self._observe(await api.status(), pid)
            if self.live.tunnel.state == "running":
                delay = self.poll_interval
            elif was_running:
                delay = FIRST_POLL
            else:
                delay = min(delay * 2, self.poll_interval)
            if quick is not None:
                delay = min(delay, quick)
                quick = quick * 2 if quick < SETTLE_POLLS_UNTIL else None
            self._news.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that
            # lands as the event is set (CPython gh-86296), and this loop then
            # outlived the frpc it watched, holding the supervisor forever.
            try:
                async with asyncio.timeout(delay):
                    await self._news.wait()
            except TimeoutError:
                continue
            quick = FIRST_POLL

    def _observe(self, status: dict[str, Any] | None, pid: int) -> None:
        """Turn one admin API answer into a state change."""
        if status is None:
            return  # the admin API is not up yet, or frpc is busy: no news
        state = self.live.tunnel.state
        proxy = _our_proxy(status)
        if proxy is not None and proxy.get("status") == "running":
            if state != "running":
                self._running_since = asyncio.get_running_loop().time()
                self._last_complaint = None
                log.info("tunnel running", pid=pid, remote=proxy.get("remote_addr"))
                self._set("running", last_error=None)
            return
        if proxy is not None and proxy.get("err"):
            self._complain(f"frps refused the tunnel: {proxy['err']}")
        if state == "running":
            # An empty answer: frpc lost frps and is logging in again by itself.
            self._running_since = None
            log.warning("tunnel lost; frpc is reconnecting to frps", pid=pid)
            self._set("starting")

    def _set(self, state: TunnelStateName, **fields: Any) -> None:
        self.live.set_tunnel(state, **fields)


def _our_proxy(status: dict[str, Any]) -> dict[str, Any] | None:
    """The ``hub`` proxy's entry; frpc names it ``{user}.hub`` when ``user`` is set."""
    for proxies in status.values():
        if not isinstance(proxies, list):
            continue
        for proxy in proxies:
            name = proxy.get("name", "") if isinstance(proxy, dict) else ""
            if name == PROXY_NAME or name.endswith(f".{PROXY_NAME}"):
                return proxy  # type: ignore[no-any-return]
    return None
