"""Tunnel parts the benches share: the reference Cloud with a real frps, a Hub app, a bare frpc.

The bare frpc is the baseline of every tunnel figure: frp 0.65.0 started by
hand on a config as short as frp's own examples, plus the two lines the
reference Cloud's frps plugin needs to let a hub in (``user`` = hub id,
``metadatas.token``). hublink's frpc is the one ``hublink run`` starts and
polls. Both log in to the same frps, both expose the same Hub app; every port
is a free one on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from hublink import logs
from hublink.devcloud import CloudOptions, DevCloud
from hublink.devcloud.hubapp import hub_app
from hublink.devcloud.ports import free_port, free_port_range

ROOT = Path(__file__).resolve().parent.parent
FRP_BIN = Path(os.environ.get("HUBLINK_FRP_BIN", ROOT / ".cache" / "frp" / "bin"))

__all__ = ["FRP_BIN", "free_port", "hub_app"]


def need_frp() -> None:
    """Stop with a clear message when frp is not where the benches look for it."""
    if not (FRP_BIN / "frpc").exists() or not (FRP_BIN / "frps").exists():
        raise SystemExit(f"frpc/frps missing in {FRP_BIN}: run `make frp`")


@contextlib.asynccontextmanager
async def frp_cloud(data_dir: Path, hubs: int) -> AsyncIterator[DevCloud]:
    """The reference Cloud with its real frps, room for ``hubs`` tunnel ports."""
    need_frp()
    # frps's lines are relayed through structlog: keep them out of the bench's output.
    logs.configure("error", "console")
    cloud = DevCloud(
        data_dir, CloudOptions(port_range=free_port_range(hubs)), frps_path=FRP_BIN / "frps"
    )
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()


def tunnel_env(cloud: DevCloud, local_port: int) -> dict[str, str]:
    """``HUBLINK_*`` variables for ``hublink run`` with the tunnel on, against ``cloud``'s frps.

    Everything else stays at its default (admin API polling, restarts, proxy type).
    """
    assert cloud.frps is not None
    return {
        "HUBLINK_TUNNEL__ENABLED": "true",
        "HUBLINK_TUNNEL__FRPC_PATH": str(FRP_BIN / "frpc"),
        "HUBLINK_TUNNEL__SERVER_ADDR": "127.0.0.1",
        "HUBLINK_TUNNEL__SERVER_PORT": str(cloud.frps.bind_port),
        "HUBLINK_TUNNEL__ADMIN_PORT": str(free_port()),
        "HUBLINK_HUB__LOCAL_PORT": str(local_port),
    }


def bare_frpc_config(cloud: DevCloud, hub: dict[str, Any], local_port: int) -> str:
    """frpc.toml as frp's README writes it, with the plugin's login lines; no admin API."""
    assert cloud.frps is not None
    return (
        f'serverAddr = "127.0.0.1"\n'
        f"serverPort = {cloud.frps.bind_port}\n"
        f'user = "{hub["hub_id"]}"\n'
        f'metadatas.token = "{hub["tunnel_token"]}"\n'
        "\n[[proxies]]\n"
        'name = "hub"\n'
        'type = "tcp"\n'
        'localIP = "127.0.0.1"\n'
        f"localPort = {local_port}\n"
        f"remotePort = {hub['tunnel_port']}\n"
    )


def prepare_bare_frpc(cloud: DevCloud, folder: Path, local_port: int) -> tuple[Path, str]:
    """A new hub of ``cloud`` and a bare frpc.toml for it in ``folder``; the file and tunnel URL."""
    hub = cloud.create_hub(name="bare frpc")
    config = _write_private(folder / "frpc.toml", bare_frpc_config(cloud, hub, local_port))
    return config, f"http://127.0.0.1:{hub['tunnel_port']}/"


async def spawn_frpc(config: Path) -> asyncio.subprocess.Process:
    """frpc on ``config``, its output discarded."""
    return await asyncio.create_subprocess_exec(
        str(FRP_BIN / "frpc"),
        "-c",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def start_bare_frpc(
    cloud: DevCloud, folder: Path, local_port: int
) -> tuple[asyncio.subprocess.Process, str]:
    """A new hub of ``cloud`` served by a bare frpc; the process and its tunnel URL."""
    config, url = prepare_bare_frpc(cloud, folder, local_port)
    return await spawn_frpc(config), url


def _write_private(path: Path, text: str) -> Path:
    """``text`` into ``path`` (mode 0600: it holds the hub's token); ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    return path


async def first_ok(url: str, started: float, limit: float = 30.0) -> float:
    """GET ``url`` every 5 ms until it answers 200; seconds since ``started`` (perf_counter)."""
    deadline = time.monotonic() + limit
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(trust_env=False, connector=connector) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        await resp.read()
                        return time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.005)
    raise TimeoutError(f"bench: {url} never answered 200")


async def stop(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaped either way."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (from every thread's ``children`` list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


async def frpc_of(daemon_pid: int, limit: float = 30.0) -> int:
    """The pid of the frpc that ``hublink run`` (``daemon_pid``) started."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for pid in child_pids(daemon_pid):
            if _program(pid) == "frpc":
                return pid
        await asyncio.sleep(0.05)
    raise TimeoutError("bench: the daemon never started frpc")


def _program(pid: int) -> str:
    """The file name of the program ``pid`` runs ("" once it is gone)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except FileNotFoundError:
        return ""
