"""``hublink devcloud`` with frps: a fixed frps port, so a restarted reference Cloud is where
its hubs' frpc look for it (issue 10, item 21)."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from hublink.cli import build_parser
from hublink.config import DEFAULT_FRPS_PORT
from hublink.devcloud import CloudOptions, DevCloud
from hublink.devcloud.hubapp import HELLO
from hublink.devcloud.ports import free_port, free_port_range
from hublink.live import LiveState
from hublink.tunnel.supervisor import TunnelSupervisor
from support.cli import HUBLINK_COMMAND
from support.polling import wait_until
from support.tunnel import FRP_PATIENCE, fetch_eventually, make_tunnel_hub, running


def test_frps_listens_on_the_hubs_default_server_port_unless_told() -> None:
    assert build_parser().parse_args(["devcloud"]).frps_port == DEFAULT_FRPS_PORT == 7000
    assert build_parser().parse_args(["devcloud", "--frps-port", "7100"]).frps_port == 7100


async def serve_devcloud(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """``hublink devcloud ARGS`` in a child, read until it says it is ready; its lines so far."""
    process = await asyncio.create_subprocess_exec(
        *HUBLINK_COMMAND,
        "devcloud",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "press Ctrl-C to stop":
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, f"devcloud ended before it was ready: {lines}"
        lines.append(line.decode().rstrip())
    return process, lines


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.frp
async def test_devcloud_keeps_the_frps_port_across_restarts(tmp_path: Path, frp_bin: Path) -> None:
    frps_port = free_port()
    args = (
        *("--port", "0", "--data-dir", str(tmp_path / "cloud")),
        *("--frps", str(frp_bin / "frps"), "--frps-port", str(frps_port)),
    )
    for _ in range(2):
        process, lines = await serve_devcloud(*args)
        try:
            assert any(f"frps:          port {frps_port} for hubs" in line for line in lines)
            assert accepts(frps_port)
        finally:
            assert await stop(process) == 0
        assert not accepts(frps_port)


@pytest.mark.frp
async def test_a_taken_frps_port_is_a_clear_error(tmp_path: Path, frp_bin: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *HUBLINK_COMMAND,
            "devcloud",
            *("--port", "0", "--data-dir", str(tmp_path), "--frps", str(frp_bin / "frps")),
            *("--frps-port", str(port)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    text = stderr.decode()
    assert f"frps cannot listen on 127.0.0.1:{port}" in text
    assert "--frps-port" in text and "Traceback" not in text


@pytest.mark.frp
async def test_a_hubs_tunnel_comes_back_after_the_cloud_restarts(
    tmp_path: Path, frp_bin: Path, hub_app: int
) -> None:
    cloud_port, frps_port, tunnel_ports = (
        free_port(),
        free_port(),
        free_port_range(2),
    )

    async def start_cloud() -> DevCloud:
        cloud = DevCloud(
            tmp_path / "cloud",
            CloudOptions(port_range=tunnel_ports),
            frps_path=frp_bin / "frps",
            frps_port=frps_port,
        )
        await cloud.start("127.0.0.1", cloud_port)
        return cloud

    cloud = await start_cloud()
    try:
        hub = make_tunnel_hub(cloud, tmp_path / "hub", frp_bin / "frpc", hub_app)
        live = LiveState()
        through_the_tunnel = f"http://127.0.0.1:{hub.creds.tunnel_port}/"
        async with running(TunnelSupervisor(hub.settings, hub.creds, live, poll_interval=0.1)):
            assert await fetch_eventually(through_the_tunnel) == HELLO
            await cloud.stop()
            cloud = await start_cloud()
            assert cloud.frps is not None and cloud.frps.bind_port == frps_port
            # frpc logs in again to the same address: no hub needs a new setting.
            assert await fetch_eventually(through_the_tunnel, timeout=60) == HELLO
            await wait_until(
                lambda: live.tunnel.state == "running", what="tunnel running", timeout=FRP_PATIENCE
            )
    finally:
        await cloud.stop()
