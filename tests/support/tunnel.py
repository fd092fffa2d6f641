"""Helpers for the tunnel tests: the reference Cloud with a real frps, a local Hub app, frpc.

    async def test_x(frp_cloud: DevCloud, hub_app: int, tunnel_hub: HubEnv) -> None:
        live = LiveState()
        async with running(TunnelSupervisor(tunnel_hub.settings, tunnel_hub.creds, live)):
            await wait_for(lambda: live.tunnel.state == "running")

Every port is a free loopback port; tunnel ports come from a free range given
to the Cloud as its ``port_range`` (frps's ``allowPorts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hublink.config import HubSettings, TunnelSettings
from hublink.devcloud import DevCloud
from hublink.tunnel.supervisor import TunnelSupervisor
from support.devcloud import HubEnv, make_hub_env
from support.polling import wait_until

HELLO = "hello from the hub"
#: Restart timings shrunk so that a crash loop shows several restarts in a second or two.
FAST_RESTART = {"restart_min": 0.2, "restart_max": 0.8}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free loopback ports, as ``(low, high)``."""
    for _ in range(200):
        low = free_port()
        if low + size > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(low, low + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low, low + size - 1
    raise RuntimeError("no range of free ports found")


#: frp reconnects on its own schedule: its waits get a generous deadline.
wait_for = partial(wait_until, timeout=30.0)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@contextlib.asynccontextmanager
async def running(supervisor: TunnelSupervisor) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``supervisor`` in a task; cancel it and wait for it at the end."""
    task = asyncio.create_task(supervisor.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def fetch(url: str, *, host: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url`` (optionally with a ``Host`` header); status and body."""
    headers = {"Host": host} if host else {}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp,
    ):
        return resp.status, await resp.text()


async def fetch_eventually(url: str, *, host: str | None = None, timeout: float = 30.0) -> str:
    """GET ``url`` until it answers 200 (frps may still be setting the proxy up); the body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = await fetch(url, host=host, timeout=2.0)
            if status == 200:
                return body
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} never answered 200")
        await asyncio.sleep(0.05)


@pytest.fixture
async def frp_cloud(tmp_path: Path, frp_bin: Path) -> AsyncIterator[DevCloud]:
    """The reference Cloud with its real frps; tunnel ports from a free range of 4."""
    cloud = DevCloud(
        tmp_path / "devcloud", frps_path=frp_bin / "frps", port_range=free_port_range(4)
    )
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()


@pytest.fixture
async def hub_app() -> AsyncIterator[int]:
    """The Hub application: a tiny aiohttp app on a free loopback port; that port."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text=HELLO)

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


def tunnel_settings(cloud: DevCloud, frpc: Path | str, **overrides: Any) -> TunnelSettings:
    """Tunnel settings pointing at ``cloud``'s frps, fast restarts, a free admin port."""
    assert cloud.frps is not None
    fields: dict[str, Any] = {
        "enabled": True,
        "frpc_path": str(frpc),
        "server_addr": "127.0.0.1",
        "server_port": cloud.frps.bind_port,
        "admin_port": free_port(),
        **FAST_RESTART,
    }
    return TunnelSettings(**(fields | overrides))


def make_tunnel_hub(
    cloud: DevCloud, base: Path, frpc: Path | str, local_port: int, **tunnel: Any
) -> HubEnv:
    """A hub enrolled in ``cloud`` whose settings run ``frpc`` against its frps."""
    base.mkdir(parents=True, exist_ok=True)
    return make_hub_env(
        cloud,
        base,
        tunnel=tunnel_settings(cloud, frpc, **tunnel),
        hub=HubSettings(local_port=local_port),
    )


@pytest.fixture
def tunnel_hub(frp_cloud: DevCloud, hub_app: int, frp_bin: Path, tmp_path: Path) -> HubEnv:
    """A hub of ``frp_cloud`` set up to expose ``hub_app`` through the real frpc (tcp)."""
    return make_tunnel_hub(frp_cloud, tmp_path / "hub", frp_bin / "frpc", hub_app)


def fake_frpc(folder: Path, body: str) -> Path:
    """An executable script standing in for frpc."""
    script = folder / "fake-frpc"
    script.write_text(body)
    script.chmod(0o755)
    return script


def proc_file(pid: int, name: str) -> bytes:
    """``/proc/PID/name`` (cmdline, environ) as bytes."""
    return Path(f"/proc/{pid}/{name}").read_bytes()
