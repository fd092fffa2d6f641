"""The control API's server side, inside ``hublink run`` (contract section 8).

    GET  /v1/status                            the contract's status object
    GET  /metrics                              the Prometheus series (contract section 10)
    POST /v1/events                            {"type", "data"} → queued durably → 201 {"id"}
    POST /v1/poke                              wake the outbox drain (after a ``hublink send``)
    POST /v1/register                          enroll (the same flow as ``hublink register``)
    POST /v1/backup                            back up now, in the background → 202
    POST /v1/plugin-updates/{plugin_id}/install  run the ``install_plugin_update`` hook → 202
    GET  /v1/doctor                            the ``doctor --json`` object
    GET  /v1/debug                             tasks, threads, modules loaded (leak hunting)

What the routes do is the daemon's: it hands in its
:class:`~hublink.actions.DaemonActions`, the same services the page calls, so
each use case has one path. The socket is removed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from hublink.control.register import BODY_SHAPE, RegisterRequest, read_register_body, refusal
from hublink.control.unixsock import bind_socket, prepare_socket_path
from hublink.errors import HublinkError, InvalidEvent, InvalidFields, OutboxError
from hublink.link.messages import excerpt
from hublink.metrics import Metrics, metrics_response

if TYPE_CHECKING:
    from hublink.actions import DaemonActions
    from hublink.link.notices import StateStore
    from hublink.link.outbox import AsyncOutbox

log = structlog.get_logger(__name__)

#: Largest request body accepted (a user_sync with thousands of users fits).
MAX_BODY = 4 * 1024 * 1024
NO_INSTALL_HOOK = "no install_plugin_update hook is configured, so updates cannot be installed"
NO_INSTALL_HOOK_HINT = (
    'set [hooks] install_plugin_update = ["/path/to/installer"] in hublink.toml '
    "and restart hublink (contract section 6)"
)


class ControlServer:
    """The daemon's side of the control socket."""

    def __init__(
        self,
        path: Path,
        actions: DaemonActions,
        outbox: AsyncOutbox,
        notices: StateStore,
        metrics: Metrics,
    ) -> None:
        self.path = path
        self._actions = actions
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
        await asyncio.to_thread(prepare_socket_path, self.path)
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_named_task])
        app.router.add_get("/v1/status", self._get_status)
        app.router.add_post("/v1/events", self._post_event)
        app.router.add_post("/v1/poke", self._post_poke)
        app.router.add_post("/v1/register", self._post_register)
        app.router.add_post("/v1/backup", self._post_backup)
        app.router.add_post("/v1/plugin-updates/{plugin_id}/install", self._post_install)
        app.router.add_get("/v1/doctor", self._get_doctor)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/v1/debug", self._get_debug)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            sock = await asyncio.to_thread(bind_socket, self.path)
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

    # --- routes -------------------------------------------------------------------

    async def _get_status(self, request: web.Request) -> web.Response:
        return web.json_response(await self._actions.status())

    async def _get_debug(self, request: web.Request) -> web.Response:
        """``{"tasks", "threads", "modules", "gc"}``: counts that grow without bound betray a
        leak (the soak); the modules loaded, what an idle daemon carries
        (tests/test_imports.py); ``gc``'s ``frozen`` and ``tracked`` object counts, how much
        of the heap a full collection leaves alone and how much it walks."""
        return web.json_response(
            {
                "tasks": len(asyncio.all_tasks()),
                "threads": threading.active_count(),
                "modules": sorted(sys.modules),
                "gc": {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())},
            }
        )

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return await metrics_response(self._metrics, request)

    async def _post_poke(self, request: web.Request) -> web.Response:
        self._outbox.poke()
        return web.json_response({"ok": True})

    async def _post_event(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body is None:
            return _error(400, 'the body must be a JSON object {"type": …, "data": {…}}')
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return _error(
                422,
                'the body needs a string "type" and an object "data"',
                problems=["type: required, a string"],
            )
        data = body.get("data", {})
        if not isinstance(data, dict):
            return _error(422, '"data" must be an object', problems=["data: expected an object"])
        try:
            event_id = await self._outbox.queue(self._notices, body["type"], data)
        except InvalidEvent as err:
            return _error(422, err.message, problems=err.problems)
        except OutboxError as err:
            # Full or unwritable: the caller must know it was not queued.
            return _error(503, str(err))
        return web.json_response({"id": event_id}, status=201)

    async def _post_register(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body is None:
            return _error(400, BODY_SHAPE, hint="send Content-Type: application/json")
        wanted: RegisterRequest | None = None
        try:
            wanted = read_register_body(body)
            credentials = await self._actions.register(wanted)
        except HublinkError as err:
            status, answer = refusal(err, wanted.password if wanted else None)
            if not isinstance(err, InvalidFields):
                log.warning("registration refused", status=status, error=answer["error"])
            return web.json_response(answer, status=status)
        return web.json_response(
            {"hub_id": str(credentials.hub_id), "slug": credentials.slug}, status=201
        )

    async def _post_backup(self, request: web.Request) -> web.Response:
        try:
            started = await self._actions.backup()
        except HublinkError as err:
            return _error(409, err.message, hint=err.hint)
        if not started:
            return _error(
                409,
                "a backup is already running",
                hint="wait for it to end; `hublink status` shows the last backup",
            )
        return web.json_response({"started": True}, status=202)

    async def _post_install(self, request: web.Request) -> web.Response:
        plugin_id = request.match_info["plugin_id"]
        if not self._actions.install_hook_configured:
            return _error(409, NO_INSTALL_HOOK, hint=NO_INSTALL_HOOK_HINT)
        if not await self._actions.install_update(plugin_id):
            return _error(
                404,
                f"no update is recorded for plugin {excerpt(plugin_id, 100)!r}",
                hint="`hublink status` lists the updates the Cloud announced",
            )
        return web.json_response({"started": True, "plugin_id": plugin_id}, status=202)

    async def _get_doctor(self, request: web.Request) -> web.Response:
        return web.json_response(await self._actions.doctor())


@web.middleware
async def _named_task(request: web.Request, handler: Any) -> web.StreamResponse:
    """Log lines of a request say task=control."""
    with structlog.contextvars.bound_contextvars(task="control"):
        response: web.StreamResponse = await handler(request)
        return response


async def _json_body(request: web.Request) -> Any | None:
    """The request's body as decoded JSON, or None when it is not JSON at all."""
    try:
        return await request.json()
    except (ValueError, RecursionError):
        # ValueError: not JSON, not UTF-8, an integer over 4300 digits;
        # RecursionError: nested deeper than the decoder goes.
        return None


def _error(
    status: int, message: str, *, hint: str | None = None, problems: list[str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if hint is not None:
        body["hint"] = hint
    if problems is not None:
        body["problems"] = problems
    return web.json_response(body, status=status)
