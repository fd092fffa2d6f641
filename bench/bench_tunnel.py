"""The tunnel's data path: hublink's frpc vs a bare frpc/frps pair, side by side in one run.

Real frps (the reference Cloud's, with its auth plugin) and real frpc 0.65.0,
all on 127.0.0.1, one tiny Hub app behind three paths:

* hublink: through the tunnel of ``hublink run`` (tunnel on, its own frpc.toml,
  its admin API polled as it always is);
* bare: through a bare frpc (frp's README config) on the same frps;
* direct: straight to the Hub app's port.

Sequential GETs, in blocks of 50 taking turns between the paths so that load
from other processes hits all alike: ``BENCH_TUNNEL_REQUESTS`` (default 300)
per path and round, once with a new TCP connection each (a portal user opening
pages) and once over one keep-alive connection. Each round's figure is the p50.
Goals: the same as the bare pair (issue 12 measured 1.01x); within 2x of direct
(issue 4).

Usage: ``.venv/bin/python bench/bench_tunnel.py`` (needs ``make frp``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_idle import make_hub, start_daemon
from frp_parts import first_ok, frp_cloud, hub_app, start_bare_frpc, stop, tunnel_env
from report import Row, rounds

BLOCK = 50
PATHS = ("hublink", "bare", "direct")


async def timed_gets(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    """Milliseconds per GET of ``url``, ``count`` times in a row."""
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"bench: {url} answered {resp.status}")
        samples.append(1000 * (time.perf_counter() - began))
    return samples


async def one_round(urls: dict[str, str], requests: int, *, reuse: bool) -> dict[str, float]:
    """The p50 (ms) of each path over ``requests`` GETs, in blocks taking turns."""
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    connector = aiohttp.TCPConnector(force_close=not reuse, limit=len(PATHS))
    async with aiohttp.ClientSession(trust_env=False, connector=connector) as session:
        for url in urls.values():
            await timed_gets(session, url, 10)  # warm up every path
        for _ in range(max(1, requests // BLOCK)):
            for path in PATHS:
                samples[path] += await timed_gets(session, urls[path], BLOCK)
    return {path: statistics.median(values) for path, values in samples.items()}


async def collect(count: int, requests: int) -> dict[str, dict[str, list[float]]]:
    """``count`` rounds per mode ("new", "reused"): p50 per round and path."""
    got: dict[str, dict[str, list[float]]] = {
        mode: {path: [] for path in PATHS} for mode in ("new", "reused")
    }
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        async with frp_cloud(base / "cloud", hubs=2) as cloud, hub_app() as local_port:
            creds, state_dir = make_hub(cloud, base, "hublink")
            daemon = await start_daemon(cloud.url, state_dir, **tunnel_env(cloud, local_port))
            bare, bare_url = await start_bare_frpc(cloud, base / "bare", local_port)
            try:
                urls = {
                    "hublink": f"http://127.0.0.1:{creds.tunnel_port}/",
                    "bare": bare_url,
                    "direct": f"http://127.0.0.1:{local_port}/",
                }
                started = time.perf_counter()
                await asyncio.gather(*(first_ok(url, started) for url in urls.values()))
                for _ in range(count):
                    for mode in ("new", "reused"):
                        p50 = await one_round(urls, requests, reuse=mode == "reused")
                        for path in PATHS:
                            got[mode][path].append(p50[path])
            finally:
                await stop(bare)
                await stop(daemon)
    return got


def rows() -> list[Row]:
    """Tunnel p50 through hublink's frpc beside a bare frpc's, and beside the direct path."""
    requests = int(os.environ.get("BENCH_TUNNEL_REQUESTS", "300"))
    got = asyncio.run(collect(rounds(), requests))
    new, reused = got["new"], got["reused"]
    each = f"{requests} sequential GETs"
    pair = statistics.median(new["bare"]) / statistics.median(new["direct"])
    direct_note = (
        f"A bare frpc/frps pair is itself {pair:.2f}x the direct path here (two more "
        "loopback hops, frp's TLS and multiplexing): no frp client gets under 2x on this "
        "box; hublink's figure is to be read against the pair's."
        if pair > 2
        else ""
    )
    return [
        Row(
            f"tunnel GET p50, new connection each ({each})",
            "ms",
            new["hublink"],
            new["bare"],
            "bare frpc/frps pair",
            "≈ 1x",
        ),
        Row(
            f"tunnel GET p50, one keep-alive connection ({each})",
            "ms",
            reused["hublink"],
            reused["bare"],
            "bare frpc/frps pair",
            "≈ 1x",
        ),
        Row(
            f"tunnel GET p50, new connection each ({each})",
            "ms",
            new["hublink"],
            new["direct"],
            "straight to the Hub's port",
            "<= 2x",
            direct_note,
        ),
    ]


if __name__ == "__main__":
    for row in rows():
        print(" | ".join(row.cells()))
