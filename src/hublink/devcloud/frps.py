"""The reference Cloud's frps side: a real frps child and its per-hub auth plugin.

frps checks one server-wide token at most; per-hub secrets are the job of a
server plugin (frp's ``httpPlugins``). frps POSTs every ``Login`` and
``NewProxy`` to :func:`add_plugin_routes`'s handler as
``{"version", "op", "content"}`` and obeys its answer
``{"reject": bool, "reject_reason": str, "unchange": true}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
import tomli_w
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hublink.devcloud.ports import free_port
from hublink.errors import TunnelError
from hublink.fsutil import atomic_write
from hublink.tunnel.supervisor import die_with_parent, parse_line

if TYPE_CHECKING:
    from hublink.devcloud.records import HubRecord
    from hublink.devcloud.server import DevCloud

log = structlog.get_logger(__name__)

PLUGIN_PATH = "/frps/plugin/"
#: ``{slug}.{SUBDOMAIN_HOST}`` reaches an ``http`` hub through frps's vhost port.
SUBDOMAIN_HOST = "localhost"
STOP_GRACE = 5.0
START_TIMEOUT = 15.0


# --- the plugin ---------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PluginRequest(_Message):
    """What frps POSTs to the plugin."""

    version: str = ""
    op: str
    content: dict[str, Any] = Field(default_factory=dict)


class LoginContent(_Message):
    """``Login``: the client's ``user`` and ``metadatas``."""

    user: str = ""
    metas: dict[str, str] | None = None


class ProxyUser(_Message):
    """``NewProxy``'s ``user``: who logged in."""

    user: str = ""
    metas: dict[str, str] | None = None
    run_id: str = ""


class NewProxyContent(_Message):
    """``NewProxy``: the proxy the client asks frps to open."""

    user: ProxyUser = Field(default_factory=ProxyUser)
    proxy_name: str = ""
    proxy_type: str = ""
    remote_port: int | None = None
    subdomain: str | None = None


def add_plugin_routes(app: web.Application, cloud: DevCloud) -> None:
    """Serve frps's server plugin at ``POST /frps/plugin/``, deciding with ``cloud``'s hubs."""

    async def handle(request: web.Request) -> web.Response:
        try:
            message = PluginRequest.model_validate(await request.json())
        except (ValueError, ValidationError):
            return web.json_response({"reject": True, "reject_reason": "malformed plugin request"})
        reason = decide(cloud, message)
        if reason is None:
            return web.json_response({"reject": False, "unchange": True})
        log.info("frps plugin refused", op=message.op, reason=reason)
        return web.json_response({"reject": True, "reject_reason": reason})

    app.router.add_post(PLUGIN_PATH, handle)


def decide(cloud: DevCloud, message: PluginRequest) -> str | None:
    """Why frps must refuse ``message``, or None to let it through."""
    try:
        if message.op == "Login":
            login = LoginContent.model_validate(message.content)
            return _check_hub(cloud, login.user, login.metas)[1]
        if message.op == "NewProxy":
            return _check_proxy(cloud, NewProxyContent.model_validate(message.content))
    except ValidationError:
        return f"malformed {message.op} content"
    return None  # operations we did not subscribe to: none of our business


def _check_hub(
    cloud: DevCloud, hub_id: str, metas: dict[str, str] | None
) -> tuple[HubRecord | None, str | None]:
    if not hub_id:
        return None, "no hub id: set `user` to the hub id in frpc's config"
    hub = cloud.hub(hub_id)
    if hub is None:
        return None, f"unknown hub {hub_id}"
    if hub.revoked:
        return None, f"hub {hub_id} has been revoked"
    token = (metas or {}).get("token", "")
    if not hmac.compare_digest(token.encode(), hub.tunnel_token.encode()):
        return None, f"wrong tunnel token for hub {hub_id}"
    return hub, None


def _check_proxy(cloud: DevCloud, proxy: NewProxyContent) -> str | None:
    hub, reason = _check_hub(cloud, proxy.user.user, proxy.user.metas)
    if hub is None:
        return reason
    if proxy.proxy_type == "tcp":
        if proxy.remote_port != hub.tunnel_port:
            return (
                f"remote port {proxy.remote_port} is not hub {hub.hub_id}'s; "
                f"its tunnel port is {hub.tunnel_port}"
            )
        return None
    if proxy.proxy_type == "http":
        if proxy.subdomain != hub.slug:
            return f"subdomain {proxy.subdomain!r} is not hub {hub.hub_id}'s; use {hub.slug!r}"
        return None
    return f"proxy type {proxy.proxy_type!r} is not allowed; use tcp or http"


# --- the frps child -------------------------------------------------------------


def _ensure_free(host: str, port: int) -> None:
    # Checked before frps starts: with another server on the port, the wait
    # for frps to listen would connect to that one and call frps ready.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As frps does: connections of a previous frps in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise TunnelError(
                f"frps cannot listen on {host}:{port}: {err.strerror or err}",
                hint="stop what uses that port, or choose another with --frps-port "
                "(and give the hubs the same tunnel.server_port)",
            ) from None


def _connectable(host: str) -> str:
    """Where to connect to reach a server bound to ``host`` (a wildcard means this machine)."""
    wildcards = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - read, not bound
    return wildcards.get(host, host)


class FrpsServer:
    """A real frps on loopback, its plugin pointing back at the reference Cloud."""

    def __init__(self, cloud: DevCloud, frps_path: Path) -> None:
        self.cloud = cloud
        self.frps_path = frps_path
        self.bind_port = cloud.frps_port or 0
        self.vhost_http_port = 0
        self.config_path = Path(cloud.data_dir) / "frps.toml"
        self._proc: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None

    @property
    def host(self) -> str:
        """Where frps listens for hubs: the Cloud's own host (127.0.0.1 unless told)."""
        return urlsplit(self.cloud.url).hostname or "127.0.0.1"

    def config(self) -> dict[str, Any]:
        """frps.toml as a dict."""
        cloud_url = urlsplit(self.cloud.url)
        low, high = self.cloud.port_range
        return {
            # Hubs reach frps where they reach the Cloud; the hubs' tunnel
            # ports stay on this machine's loopback (proxyBindAddr).
            "bindAddr": self.host,
            "bindPort": self.bind_port,
            "proxyBindAddr": "127.0.0.1",
            "vhostHTTPPort": self.vhost_http_port,
            "subDomainHost": SUBDOMAIN_HOST,
            "allowPorts": [{"start": low, "end": high}],
            "log": {"to": "console", "disablePrintColor": True, "level": "info"},
            "httpPlugins": [
                {
                    "name": "hublink-devcloud",
                    "addr": f"{cloud_url.hostname}:{cloud_url.port}",
                    "path": PLUGIN_PATH,
                    "ops": ["Login", "NewProxy"],
                }
            ],
        }

    async def start(self) -> None:
        """Write frps.toml, start frps and wait until its bind port accepts connections.

        The ports are chosen at the first start (the Cloud's ``frps_port``, or
        a free one) and kept, so a restarted frps is where its clients look for it.

        Raises:
            TunnelError: the bind port is taken, or frps exits at start.
        """
        if self.bind_port:
            _ensure_free(self.host, self.bind_port)
        self.bind_port = self.bind_port or free_port()
        self.vhost_http_port = self.vhost_http_port or free_port()
        data = tomli_w.dumps(self.config()).encode()
        await asyncio.to_thread(atomic_write, self.config_path, data)
        self._proc = await asyncio.create_subprocess_exec(
            str(self.frps_path),
            "-c",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent(os.getpid()),
            process_group=0,
        )
        assert self._proc.stdout is not None
        self._relay = asyncio.create_task(_relay(self._proc.stdout, self._proc.pid))
        log.info("frps started", pid=self._proc.pid, bind_port=self.bind_port)
        try:
            await self._wait_listening()
        except BaseException:
            await self.stop()
            raise

    async def _wait_listening(self) -> None:
        assert self._proc is not None
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                if self._proc.returncode is not None:
                    raise TunnelError(
                        f"frps exited with code {self._proc.returncode} at start",
                        hint="its log lines above say why",
                    )
                try:
                    _, writer = await asyncio.open_connection(
                        _connectable(self.host), self.bind_port
                    )
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return

    async def stop(self) -> None:
        """SIGTERM, wait up to 5 s, SIGKILL, reap; then drain its output."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await proc.wait()
            except TimeoutError:
                log.warning("frps ignored SIGTERM; killing it", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            log.info("frps stopped", pid=proc.pid, returncode=proc.returncode)
        relay, self._relay = self._relay, None
        if relay is not None:
            await relay


async def _relay(stream: asyncio.StreamReader, pid: int) -> None:
    """Re-log frps's lines through structlog, at their own level."""
    frps_log = log.bind(frps_pid=pid)
    while True:
        try:
            raw = await stream.readline()
        except ValueError:
            continue
        if not raw:
            return
        line = parse_line(raw.decode("utf-8", "replace").rstrip())
        level = line.level
        if "use of closed network connection" in line.message:
            level = "info"  # frps warns whenever a client's proxy closes: routine here
        getattr(frps_log, level)(line.message, **line.fields())
