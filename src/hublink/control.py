"""The control API: HTTP over a unix socket, for the Hub application and the CLI.

Server side (inside ``hublink run``)::

    GET  /v1/status   the contract's status object
    GET  /metrics     the Prometheus series (contract section 10)
    POST /v1/events   {"type", "data"} → validated, queued durably → 201 {"id"}
    POST /v1/poke     wake the outbox drain (after a ``hublink send``)
    GET  /v1/debug    asyncio tasks and threads alive (leak hunting; not in the contract)

The socket lives at ``{runtime_dir}/control.sock`` with mode 0660 and is
removed on exit. A socket left behind by a crashed daemon is replaced; one
that still answers means another daemon runs, and this one refuses to start.

Client side: :func:`fetch_status` and :func:`poke`, which treat "no daemon"
as an answer, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog

from hublink.errors import DaemonRunningError, HublinkError, InvalidEvent, OutboxError
from hublink.fsutil import make_dirs

if TYPE_CHECKING:
    from aiohttp import web

    from hublink.link.notices import StateStore
    from hublink.link.outbox import AsyncOutbox
    from hublink.metrics import Metrics
    from hublink.status import StatusReport

log = structlog.get_logger(__name__)

SOCKET_MODE = 0o660
RUNTIME_DIR_MODE = 0o750
#: The client's patience: a daemon that does not answer this fast counts as absent.
CLIENT_TIMEOUT = 2.0
#: Largest request body accepted (a user_sync with thousands of users fits).
MAX_BODY = 4 * 1024 * 1024


StatusProvider = Callable[[], Awaitable["StatusReport"]]


class ControlServer:
    """The daemon's side of the control socket."""

    def __init__(
        self,
        path: Path,
        status: StatusProvider,
        outbox: AsyncOutbox,
        notices: StateStore,
        metrics: Metrics,
    ) -> None:
        self.path = path
        self._status = status
        self._outbox = outbox
        self._notices = notices
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        """Listen on the socket.

        Raises:
            DaemonRunningError: a live daemon answers on the socket already.
            HublinkError: the runtime directory or the socket cannot be created.
        """
        from aiohttp import web

        await asyncio.to_thread(_prepare_socket_path, self.path)
        app = web.Application(client_max_size=MAX_BODY, middlewares=[web.middleware(_named_task)])
        app.router.add_get("/v1/status", self._get_status)
        app.router.add_post("/v1/events", self._post_event)
        app.router.add_post("/v1/poke", self._post_poke)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/v1/debug", self._get_debug)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            sock = await asyncio.to_thread(_bind_socket, self.path)
            await web.SockSite(runner, sock).start()
        except OSError as err:
            await runner.cleanup()
            raise HublinkError(
                f"cannot listen on {self.path}: {err.strerror or err}",
                hint="check that runtime_dir is writable by the hublink user",
            ) from None
        self._runner = runner
        self._inode = self.path.stat().st_ino
        log.debug("control socket listening", path=str(self.path))

    async def stop(self) -> None:
        """Stop serving and remove the socket (only if it is still ours)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _get_status(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response(await self._status())

    async def _get_metrics(self, request: web.Request) -> web.Response:
        # Not at the top: `hublink status` imports this module, and prometheus_client
        # costs ~0.1 s to import (tests/test_imports.py keeps it out of the quick commands).
        from hublink.metrics import metrics_response

        return await metrics_response(self._metrics, request)

    async def _get_debug(self, request: web.Request) -> web.Response:
        """``{"tasks", "threads"}``: counts that grow without bound betray a leak (the soak)."""
        from aiohttp import web

        return web.json_response(
            {"tasks": len(asyncio.all_tasks()), "threads": threading.active_count()}
        )

    async def _post_poke(self, request: web.Request) -> web.Response:
        from aiohttp import web

        self._outbox.poke()
        return web.json_response({"ok": True})

    async def _post_event(self, request: web.Request) -> web.Response:
        from aiohttp import web

        try:
            body = await request.json()
        except (ValueError, RecursionError):
            # ValueError: not JSON, not UTF-8, an integer over 4300 digits;
            # RecursionError: nested deeper than the decoder goes.
            return _error(400, 'the body must be a JSON object {"type": …, "data": {…}}')
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return _error(
                422,
                'the body needs a string "type" and an object "data"',
                ["type: required, a string"],
            )
        data = body.get("data", {})
        if not isinstance(data, dict):
            return _error(422, '"data" must be an object', ["data: expected an object"])
        try:
            event_id = await self._outbox.queue(self._notices, body["type"], data)
        except InvalidEvent as err:
            return _error(422, err.message, err.problems)
        except OutboxError as err:
            # Full or unwritable: the caller must know it was not queued.
            return _error(503, str(err))
        return web.json_response({"id": event_id}, status=201)


async def _named_task(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp middleware: log lines of a request say task=control."""
    with structlog.contextvars.bound_contextvars(task="control"):
        response: web.StreamResponse = await handler(request)
        return response


def _error(status: int, message: str, problems: list[str] | None = None) -> web.Response:
    from aiohttp import web

    body: dict[str, Any] = {"error": message}
    if problems is not None:
        body["problems"] = problems
    return web.json_response(body, status=status)


def _prepare_socket_path(path: Path) -> None:
    """Create the runtime dir; clear a stale socket; refuse when a daemon answers."""
    try:
        make_dirs(path.parent, RUNTIME_DIR_MODE)
    except OSError as err:
        raise HublinkError(
            f"cannot create the runtime directory {path.parent}: {err.strerror or err}",
            hint="create it for the hublink user (systemd: RuntimeDirectory=hublink)",
        ) from None
    if not (path.exists() or path.is_symlink()):
        return
    if _answers(path):
        raise DaemonRunningError(
            f"another hublink daemon is running (it answers on {path})",
            hint="stop it first (systemctl stop hublink); two daemons must not run at once",
        )
    log.info("removing a stale control socket left by an earlier run", path=str(path))
    path.unlink()


def _bind_socket(path: Path) -> socket.socket:
    """A unix socket bound at ``path`` that never exists there with a mode other than 0660.

    ``bind`` creates the socket file with the umask's mode (0777 under umask
    000), so it is bound in a private (0700) folder beside ``path``, set to
    0660, and only then renamed into place. The folder's name is as long as
    ``control.sock``: a path that fits the 108-byte limit still fits.
    """
    staging = Path(tempfile.mkdtemp(prefix=".c", dir=path.parent))
    staged = staging / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staged))
        staged.chmod(SOCKET_MODE)
        staged.replace(path)
    except BaseException:
        sock.close()
        raise
    finally:
        staged.unlink(missing_ok=True)
        staging.rmdir()
    return sock


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


# --- client side ------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    """http.client over a unix socket: small, synchronous, no event loop needed."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("hublink", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Connect to the unix socket instead of TCP."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def exchange(
    path: Path, method: str, url: str, body: Any = None, *, timeout: float = CLIENT_TIMEOUT
) -> tuple[int, bytes] | None:
    """One request to the daemon: ``(status, raw body)``, or None when no daemon answers."""
    conn = _UnixConnection(path, timeout)
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    try:
        conn.request(method, url, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return response.status, raw


def request(
    path: Path, method: str, url: str, body: Any = None, *, timeout: float = CLIENT_TIMEOUT
) -> tuple[int, Any] | None:
    """One request to the daemon: ``(status, decoded JSON)``, or None when no daemon answers."""
    answer = exchange(path, method, url, body, timeout=timeout)
    if answer is None:
        return None
    status, raw = answer
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def metrics_now(path: Path, *, timeout: float = CLIENT_TIMEOUT) -> str | None:
    """The running daemon's ``GET /metrics`` (Prometheus text), or None when no daemon answers."""
    answer = exchange(path, "GET", "/metrics", timeout=timeout)
    if answer is None or answer[0] != 200:
        return None
    return answer[1].decode("utf-8", errors="replace")


def status_now(path: Path) -> StatusReport | None:
    """The running daemon's status object, or None when no daemon answers."""
    answer = request(path, "GET", "/v1/status")
    if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
        return None
    # Our own daemon's answer (the socket is 0660, group hublink): trusted shape.
    return cast("StatusReport", answer[1])


def post_event(path: Path, event_type: str, data: dict[str, Any]) -> tuple[int, Any] | None:
    """``POST /v1/events`` to a running daemon: ``(status, answer)``, or None when none answers.

    The daemon validates and queues the event itself (contract section 8), so
    a user who may talk to the socket (group ``hublink``) but not write the
    0700 state dir can still queue events.
    """
    return request(path, "POST", "/v1/events", {"type": event_type, "data": data})


async def fetch_status(path: Path) -> StatusReport | None:
    """:func:`status_now` for async callers."""
    return await asyncio.to_thread(status_now, path)


def poke(path: Path) -> bool:
    """Wake a running daemon's outbox drain; whether a daemon answered. Never raises."""
    try:
        answer = request(path, "POST", "/v1/poke", {}, timeout=1.0)
    except Exception:
        # Best effort by contract: the event is durable already, the daemon
        # finds it at its next drain anyway.
        log.debug("poking the daemon failed", exc_info=True)
        return False
    return answer is not None and answer[0] == 200
