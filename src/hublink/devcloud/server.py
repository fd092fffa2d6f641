"""The reference Cloud as a server: the state of :mod:`hublink.devcloud.state` on loopback."""

from __future__ import annotations

import asyncio
import importlib
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from pydantic import SecretStr

from hublink.credentials import Credentials, CredentialStore
from hublink.devcloud import admin, backups, rest, ws
from hublink.devcloud.polling import wait_until
from hublink.devcloud.state import STATE_KEY, CloudOptions, CloudState

if TYPE_CHECKING:
    from hublink.devcloud.frps import FrpsServer

log = structlog.get_logger(__name__)

#: How long in-flight requests may finish when the Cloud stops.
SHUTDOWN_TIMEOUT = 1.0


class DevCloud(CloudState):
    """The Cloud side of the contract, served by aiohttp on loopback.

    The state (:class:`CloudState`, made with ``options``) outlives a stop
    and start of this object; with ``ssl_context`` it serves HTTPS and WSS,
    with ``frps_path`` it runs frps beside itself with the per-hub auth
    plugin, listening for hubs on ``frps_port`` (a free port when None, as
    tests want; ``hublink devcloud`` gives 7000, the hubs' default
    ``tunnel.server_port``).
    """

    def __init__(
        self,
        data_dir: Path,
        options: CloudOptions | None = None,
        *,
        frps_path: Path | None = None,
        frps_port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(data_dir, options)
        self.frps_path = frps_path
        self.frps_port = frps_port
        self.ssl_context = ssl_context
        self.frps: FrpsServer | None = None
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port = 0

    # --- lifecycle ------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Serve on ``host:port``; by default the previous ones (127.0.0.1 and a free port)."""
        if self._runner is not None:
            raise RuntimeError("the reference Cloud is already running")
        self._host = host or self._host
        port = self._port if port is None else port
        self.store  # noqa: B018 - opened now, so an unwritable data dir fails at start
        app = self._build_app()
        frps_module = self._frps_module()
        if frps_module is not None:
            frps_module.add_plugin_routes(app, self)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, port, ssl_context=self.ssl_context)
            await site.start()
            self._port = _bound_port(runner)
            self._runner = runner
            if frps_module is not None:
                assert self.frps_path is not None
                self.frps = frps_module.FrpsServer(self, self.frps_path)
                await self.frps.start()
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        log.info("devcloud started", url=self.url)

    async def stop(self, code: int = 1001, *, abrupt: bool = False) -> None:
        """Stop serving; every open link is closed with ``code`` (or dropped, if ``abrupt``)."""
        if self.frps is not None:
            frps, self.frps = self.frps, None
            await frps.stop()
        runner, self._runner = self._runner, None
        if runner is None:
            return
        hub_ids = list(self._links)
        if abrupt:
            for hub_id in hub_ids:
                self.drop_hub(hub_id)
        else:
            await asyncio.gather(*(self.close_hub(h, code, "server stopping") for h in hub_ids))
        await runner.cleanup()
        self.close_store()
        log.info("devcloud stopped")

    @property
    def running(self) -> bool:
        """Whether the Cloud is serving."""
        return self._runner is not None

    @property
    def port(self) -> int:
        """The TCP port it serves on (0 before the first start)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121`` (``https`` with an SSL context)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host}:{self._port}"

    def ws_url(self, hub_id: str, token: str) -> str:
        """The WebSocket URL of a hub's link."""
        return f"{self.url.replace('http', 'ws', 1)}/ws/hub/{hub_id}/?token={token}"

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[ws.handshake_recorder(), self.faults.middleware()])
        app[STATE_KEY] = self
        rest.add_routes(app)
        ws.add_routes(app)
        app.router.add_post("/api/hubs/{hub_id}/backups/", backups.upload)
        admin.add_routes(app)
        return app

    def _frps_module(self) -> ModuleType | None:
        # Imported by name and only when asked for: frps support is optional,
        # and the tunnel's module must not load for every test of the Cloud.
        if self.frps_path is None:
            return None
        return importlib.import_module("hublink.devcloud.frps")

    def enroll_into(self, state_dir: Path, name: str = "Test Hub") -> Credentials:
        """Create a hub and save its credentials in ``state_dir``, as `register` would.

        For tests, benchmarks and tools that need an enrolled hub without
        running the enrollment flow itself.
        """
        created = self.create_hub(name=name)
        creds = Credentials(
            hub_id=uuid.UUID(created["hub_id"]),
            slug=created["slug"],
            tunnel_port=created["tunnel_port"],
            tunnel_token=SecretStr(created["tunnel_token"]),
            cloud_url=self.url,
            registered_at=datetime.now(UTC),
            name=name,
        )
        store = CredentialStore(state_dir)
        with store.locked():
            store.save(creds)
        return creds

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10,  # noqa: ASYNC109 - a polling helper whose signature tests share
        what: str | None = None,
    ) -> None:
        """Poll ``predicate`` until it is true (:func:`hublink.devcloud.polling.wait_until`).

        Raises:
            TimeoutError: it stayed false for ``timeout`` seconds.
        """
        await wait_until(predicate, timeout, what or "")


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])
