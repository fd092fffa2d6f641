"""Serving the page on ``web.listen``: :class:`PageServer`.

``web.listen`` is read by :func:`hublink.addresses.split_listen`, the one parser
of it (the settings check its shape when they load).
"""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from hublink.addresses import split_listen
from hublink.config import WebSettings
from hublink.errors import WebListenError
from hublink.web.actions import PageActions
from hublink.web.app import build_app

log = structlog.get_logger(__name__)

#: Seconds given to open requests when the page stops.
SHUTDOWN_TIMEOUT = 5.0
#: What a browser on this box opens for a page listening on every address.
_LOOPBACK_FOR = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


class PageServer:
    """Runs an application from :func:`hublink.web.build_app` on ``web.listen``."""

    def __init__(self, app: web.Application, listen: str) -> None:
        self.app = app
        self.listen = listen
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int | None:
        """The bound port (useful when ``web.listen`` asked for port 0), or None when stopped."""
        if self._runner is None:
            return None
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        return None

    @property
    def url(self) -> str | None:
        """The page's address for a browser on this box (``http://127.0.0.1:8002/``), or
        None when stopped. A wildcard listen (``0.0.0.0``, ``::``) is shown as loopback."""
        port = self.port
        if port is None:
            return None
        host, _ = split_listen(self.listen, any_port=True)
        host = _LOOPBACK_FOR.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            WebListenError: ``web.listen`` is malformed or cannot be bound.
        """
        try:
            host, port = split_listen(self.listen, any_port=True)
        except ValueError as err:
            raise WebListenError(
                f"web.listen: {err}", hint="for example 127.0.0.1:8002, or [::1]:8002 for IPv6"
            ) from None
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            await runner.cleanup()
            raise WebListenError(
                f"the page cannot listen on {self.listen}: {err.strerror or err}",
                hint="another program may use the port, or the address is not on this box; "
                "change web.listen",
            ) from err
        self._runner = runner
        # The code is a secret: the log says how to see it, never what it is.
        log.info(
            "local page listening",
            listen=self.listen,
            url=self.url,
            hint="`hublink status` (as root or hublink) shows the URL with its setup code",
        )

    async def stop(self) -> None:
        """Stop serving; open requests get :data:`SHUTDOWN_TIMEOUT` seconds."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def serve_page(settings: WebSettings, actions: PageActions, state_dir: Path) -> PageServer:
    """The page of :func:`hublink.web.build_app`, served on ``settings.listen``.

    Raises:
        WebListenError: ``web.listen`` cannot be bound, or the setup code in
            ``state_dir`` can be neither read nor made.
    """
    try:
        app = build_app(settings, actions, state_dir)
    except OSError as err:
        raise WebListenError(
            f"the page's setup code cannot be read or made in {state_dir}: {err.strerror or err}",
            hint="the web-code file must belong to the user hublink runs as",
        ) from err
    server = PageServer(app, settings.listen)
    await server.start()
    return server
