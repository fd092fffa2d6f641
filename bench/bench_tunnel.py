"""Latency through the frp tunnel vs straight to the Hub's port, side by side in one run.

Real frps (the reference Cloud's, with its auth plugin) and real frpc 0.65.0,
all on 127.0.0.1. For each frpc ``transport`` variant:

* first:  time from frpc's start to the first request answered through the tunnel
* new:    ``BENCH_TUNNEL_REQUESTS`` (default 1000) sequential GETs of a tiny page,
          a new TCP connection each (a portal user opening pages)
* reused: the same over one keep-alive connection
* page:   like ``new``, but the page takes 2 ms to render, as a real Hub's do

each measured through frps's remote port and directly against the local
port, interleaved in blocks of 50 so that load from other processes hits
both alike. Reports p50/p99 and the tunnel/direct p50 ratio. Target (issue 4):
p50 through the tunnel within 2x of direct.

Usage: ``.venv/bin/python bench/bench_tunnel.py`` (needs ``make frp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from hublink import logs
from hublink.config import HubSettings, Settings, TunnelSettings
from hublink.credentials import Credentials
from hublink.devcloud import DevCloud
from hublink.fsutil import atomic_write
from hublink.live import LiveState
from hublink.tunnel.config import TRANSPORT, build_config, new_admin_password, render
from hublink.tunnel.supervisor import FIRST_POLL, POLL_INTERVAL, TunnelSupervisor

ROOT = Path(__file__).resolve().parent.parent
FRP_BIN = Path(os.environ.get("HUBLINK_FRP_BIN", ROOT / ".cache" / "frp" / "bin"))
REQUESTS = int(os.environ.get("BENCH_TUNNEL_REQUESTS", "1000"))
BLOCK = 50
PAGE_WORK = 0.002
LOG = open("/tmp/bench_frpc.log", "ab")  # noqa: SIM115

#: tcpMux is not among them: it must match frps's own setting (on by default),
#: or frps hangs up on the login (``connect to server error: EOF``).
VARIANTS: dict[str, dict[str, Any]] = {
    "frp defaults (poolCount 0)": {},
    "poolCount 1": {"poolCount": 1},
    "poolCount 5": {"poolCount": 5},
    # For scale only: the login carries the hub's token, so TLS stays on.
    "TLS off (NOT adoptable)": {"tls": {"enable": False}},
    f"hublink's {TRANSPORT or 'frp defaults'}": dict(TRANSPORT),
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def hub_app() -> tuple[web.AppRunner, int]:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def page(_request: web.Request) -> web.Response:
        await asyncio.sleep(PAGE_WORK)  # a real Hub renders its pages in milliseconds
        return web.Response(text="page")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/page", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def start_frpc(config: dict[str, Any], path: Path) -> asyncio.subprocess.Process:
    atomic_write(path, render(config))
    return await asyncio.create_subprocess_exec(
        str(FRP_BIN / "frpc"),
        "-c",
        str(path),
        stdout=LOG,
        stderr=LOG,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def first_request(url: str, started: float) -> float:
    async with aiohttp.ClientSession(trust_env=False) as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        await resp.read()
                        return time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.005)


async def timed_gets(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        samples.append(time.perf_counter() - began)
    return samples


async def compare(tunnel_url: str, direct_url: str, *, reuse: bool) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"tunnel": [], "direct": []}
    connector = aiohttp.TCPConnector(force_close=not reuse, limit=1)
    async with aiohttp.ClientSession(trust_env=False, connector=connector) as session:
        await timed_gets(session, tunnel_url, 20)  # warm up both paths
        await timed_gets(session, direct_url, 20)
        for _ in range(max(1, REQUESTS // BLOCK)):
            results["tunnel"] += await timed_gets(session, tunnel_url, BLOCK)
            results["direct"] += await timed_gets(session, direct_url, BLOCK)
    return results


async def through_the_supervisor(settings: Settings, creds: Credentials, url: str) -> None:
    """The daemon's path: TunnelSupervisor writes frpc.toml (fsync), starts frpc, polls it."""
    live = LiveState()
    up = asyncio.Event()
    live.subscribe(lambda: live.tunnel.state == "running" and up.set())
    started = time.perf_counter()
    task = asyncio.create_task(TunnelSupervisor(settings, creds, live).run())
    try:
        first = await asyncio.wait_for(first_request(url, started), 30)
        await asyncio.wait_for(up.wait(), 30)
        running = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(
        f"\n-- TunnelSupervisor: first request {first * 1000:.0f} ms after run(), "
        f"state running after {running * 1000:.0f} ms (admin API polled after "
        f"{FIRST_POLL * 1000:g} ms rising to {POLL_INTERVAL:g} s)"
    )


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(name: str, first: float, runs: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n-- {name}: first request {first * 1000:.0f} ms after frpc start")
    for mode, res in runs.items():
        t50, d50 = pct(res["tunnel"], 0.5), pct(res["direct"], 0.5)
        print(
            f"   {mode:7s} tunnel p50 {t50:6.2f} ms p99 {pct(res['tunnel'], 0.99):6.2f} ms | "
            f"direct p50 {d50:6.2f} ms p99 {pct(res['direct'], 0.99):6.2f} ms | "
            f"ratio p50 {t50 / d50:4.2f}x"
        )


async def main() -> int:
    logs.configure("error", "console")
    if not (FRP_BIN / "frpc").exists():
        print(f"{FRP_BIN}/frpc missing: run `make frp`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-tunnel-") as tmp:
        port = free_port()
        cloud = DevCloud(Path(tmp) / "cloud", frps_path=FRP_BIN / "frps", port_range=(port, port))
        await cloud.start()
        runner, local_port = await hub_app()
        try:
            assert cloud.frps is not None
            hub = cloud.create_hub()
            creds = Credentials(
                hub_id=UUID(hub["hub_id"]),
                slug=hub["slug"],
                tunnel_port=hub["tunnel_port"],
                tunnel_token=SecretStr(hub["tunnel_token"]),
                cloud_url=cloud.url,
                registered_at=datetime.now(UTC),
            )
            settings = Settings(
                cloud_url=cloud.url,
                state_dir=Path(tmp) / "state",
                hub=HubSettings(local_port=local_port),
                tunnel=TunnelSettings(
                    frpc_path=str(FRP_BIN / "frpc"),
                    server_addr="127.0.0.1",
                    server_port=cloud.frps.bind_port,
                    admin_port=free_port(),
                ),
            )
            tunnel_url = f"http://127.0.0.1:{creds.tunnel_port}/"
            direct_url = f"http://127.0.0.1:{local_port}/"
            print(f"{REQUESTS} sequential GETs per path and mode; frp 0.65.0 on loopback")
            for name, transport in VARIANTS.items():
                config = build_config(settings, creds, new_admin_password(), transport=transport)
                started = time.perf_counter()
                proc = await start_frpc(config, settings.state_dir / "frpc.toml")
                try:
                    first = await asyncio.wait_for(first_request(tunnel_url, started), 30)
                    runs = {
                        "new": await compare(tunnel_url, direct_url, reuse=False),
                        "reused": await compare(tunnel_url, direct_url, reuse=True),
                        "page": await compare(
                            tunnel_url + "page", direct_url + "page", reuse=False
                        ),
                    }
                finally:
                    await stop(proc)
                report(name, first, runs)
                # frps frees the remote port once it notices frpc is gone.
                await asyncio.sleep(0.5)
            await through_the_supervisor(settings, creds, tunnel_url)
        finally:
            await runner.cleanup()
            await cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
