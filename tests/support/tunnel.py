"""Helpers for the tunnel tests: the reference Cloud with a real frps, a local Hub app, frpc.

    async def test_x(frp_cloud: DevCloud, hub_app: int, tunnel_hub: HubEnv) -> None:
        live = LiveState()
        async with running(TunnelSupervisor(tunnel_hub.settings, tunnel_hub.creds, live)):
            await wait_until(lambda: live.tunnel.state == "running", FRP_PATIENCE)

Every port is a free loopback port; tunnel ports come from a free range given
to the Cloud as its ``port_range`` (frps's ``allowPorts``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hublink.config import HubSettings, TunnelSettings
from hublink.devcloud import CloudOptions, DevCloud
from hublink.devcloud.hubapp import hub_app as serve_hub_app
from hublink.devcloud.ports import free_port, free_port_range
from hublink.tunnel.supervisor import TunnelSupervisor
from support.cloud import HubEnv, make_hub_env
from support.polling import wait_until
from support.processes import write_executable
from support.timing import scaled

#: Restart timings shrunk so that a crash loop shows several restarts in a second or two.
FAST_RESTART = {"restart_min": scaled(0.2), "restart_max": scaled(0.8)}
#: frp reconnects on its own schedule: waits for frpc and frps get a generous deadline (s).
FRP_PATIENCE = 30.0


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

    async def answer() -> str | None:
        try:
            status, body = await fetch(url, host=host, timeout=scaled(2.0))
        except (aiohttp.ClientError, TimeoutError):
            return None
        return body if status == 200 else None

    body: str = await wait_until(answer, timeout, f"{url} to answer 200", poll=0.05)
    return body


@pytest.fixture
async def frp_cloud(tmp_path: Path, frp_bin: Path) -> AsyncIterator[DevCloud]:
    """The reference Cloud with its real frps; tunnel ports from a free range of 4."""
    cloud = DevCloud(
        tmp_path / "devcloud",
        CloudOptions(port_range=free_port_range(4)),
        frps_path=frp_bin / "frps",
    )
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()


@pytest.fixture
async def hub_app() -> AsyncIterator[int]:
    """The Hub application (:mod:`hublink.devcloud.hubapp`) on a free loopback port; that port."""
    async with serve_hub_app() as port:
        yield port


def make_tunnel_settings(cloud: DevCloud, frpc: Path | str, **overrides: Any) -> TunnelSettings:
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
        tunnel=make_tunnel_settings(cloud, frpc, **tunnel),
        hub=HubSettings(local_port=local_port),
    )


@pytest.fixture
def tunnel_hub(frp_cloud: DevCloud, hub_app: int, frp_bin: Path, tmp_path: Path) -> HubEnv:
    """A hub of ``frp_cloud`` set up to expose ``hub_app`` through the real frpc (tcp)."""
    return make_tunnel_hub(frp_cloud, tmp_path / "hub", frp_bin / "frpc", hub_app)


def write_fake_frpc(folder: Path, body: str) -> Path:
    """An executable script standing in for frpc."""
    return write_executable(folder, "fake-frpc", body)
