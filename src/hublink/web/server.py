"""Serving the page on ``web.listen``: :class:`PageServer`."""

from __future__ import annotations

import ipaddress

import structlog
from aiohttp import web

from hublink.errors import HublinkError

log = structlog.get_logger(__name__)

#: Seconds given to open requests when the page stops.
SHUTDOWN_TIMEOUT = 5.0


class WebListenError(HublinkError):
    """``web.listen`` is malformed or cannot be bound (port in use, address not on this box)."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port.

    Raises:
        WebListenError: not of that shape.
    """
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_v6 = _is_ipv6(host)
    else:
        valid_v6 = ":" not in host
    if not sep or not host or not valid_v6 or not port_text.isdigit() or int(port_text) > 65535:
        raise WebListenError(
            f"web.listen {listen!r} is not HOST:PORT",
            hint="for example 127.0.0.1:8002, or [::1]:8002 for IPv6",
        )
    return host, int(port_text)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


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

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            WebListenError: ``web.listen`` is malformed or cannot be bound.
        """
        host, port = parse_listen(self.listen)
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
        log.info("page listening", listen=self.listen, port=self.port)

    async def stop(self) -> None:
        """Stop serving; open requests get :data:`SHUTDOWN_TIMEOUT` seconds."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
