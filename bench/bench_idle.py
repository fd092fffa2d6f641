"""Idle footprint: ``hublink run`` as users run it vs the seed document's minimal client.

In one window, side by side, all connected to the reference Cloud (in this
process, with its real frps) with a 30 s heartbeat:

* hublink, tunnel off, the local page and metrics on (``web.enabled`` where this
  build has the key, ``metrics.listen`` on a free port; the page fetched and
  ``/metrics`` scraped once before the window, as a shop would);
* hublink, tunnel on, everything else at its defaults; its frpc measured apart;
* the seed's client (websockets + a heartbeat loop), the baseline of them all;
* a bare frpc (frp's README config) on the same frps, for hublink's frpc.

After a warm-up, RSS at the end and CPU time over the window (default 20 s;
``BENCH_IDLE_SECONDS`` or the first argument) of each process. A window shorter
than the heartbeat may hold no heartbeat at all: lengthen it for CPU figures to
quote. Goals (issue 12): RSS <= 1.75x the seed client's with page and metrics
on; hublink's CPU < 0.05 % with the tunnel on.

The other benches import the helpers below (``make_hub``, ``daemon_env``,
``start_daemon``, ``proc_rss``, ``proc_cpu``, ``wait_for``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from frp_parts import free_port, frp_cloud, frpc_of, hub_app, start_bare_frpc, stop, tunnel_env
from report import Row, rounds

from hublink.config import Settings
from hublink.credentials import Credentials
from hublink.devcloud import DevCloud

CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The seed's client (../shared/seed/hub-cloud-communication.md), made runnable:
#: websockets.connect + a heartbeat loop every 30 s + a receive loop.
SEED_CLIENT = r"""
import asyncio, json, sys
from datetime import datetime, UTC
import websockets

async def send_heartbeat(websocket):
    while True:
        await websocket.send(json.dumps({
            "type": "heartbeat",
            "timestamp": datetime.now(UTC).isoformat()
        }))
        await asyncio.sleep(30)

async def handle_message(message):
    pass

async def connect_to_cloud(uri):
    async with websockets.connect(uri) as websocket:
        heartbeat = asyncio.create_task(send_heartbeat(websocket))
        async for message in websocket:
            await handle_message(json.loads(message))
        heartbeat.cancel()

asyncio.run(connect_to_cloud(sys.argv[1]))
"""


def make_hub(cloud: DevCloud, base: Path, name: str) -> tuple[Credentials, Path]:
    """Enroll a hub in ``cloud``; its credentials and its state dir."""
    state_dir = base / name / "state"
    return cloud.enroll_into(state_dir, name=name), state_dir


def has_setting(section: str, key: str) -> bool:
    """Whether this build's settings model has ``section.key`` (e.g. ``web.enabled``)."""
    field = Settings.model_fields.get(section)
    fields = getattr(field.annotation, "model_fields", {}) if field is not None else {}
    return key in fields


def daemon_env(
    cloud_url: str, state_dir: Path, heartbeat: float = 30.0, **env: str
) -> dict[str, str]:
    """The environment of ``hublink run`` for the hub in ``state_dir``, logging as the unit does.

    Default log level (``info``, or ``BENCH_LOG_LEVEL``) in the journal format;
    tunnel off unless ``env`` turns it on. The local page, where this build has
    one, stays at its default (on) but on a free port, so that daemons side by
    side (and other people's on a shared box) do not fight over 127.0.0.1:8002.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    # Users' installs keep their .pyc files; a bench run must not recompile each time.
    child_env.pop("PYTHONDONTWRITEBYTECODE", None)
    config = state_dir.parent / "hublink.toml"
    config.write_text("")
    child_env.update(
        HUBLINK_CONFIG=str(config),
        HUBLINK_CLOUD_URL=cloud_url,
        HUBLINK_STATE_DIR=str(state_dir),
        HUBLINK_RUNTIME_DIR=str(state_dir.parent / "run"),
        HUBLINK_TUNNEL__ENABLED="false",
        HUBLINK_WEBSOCKET__HEARTBEAT_INTERVAL=str(heartbeat),
        HUBLINK_LOG__LEVEL=os.environ.get("BENCH_LOG_LEVEL", "info"),
        HUBLINK_LOG__FORMAT="journal",
    )
    if has_setting("web", "listen"):
        child_env["HUBLINK_WEB__LISTEN"] = f"127.0.0.1:{free_port()}"
    child_env.update(env)
    return child_env


async def start_daemon(
    cloud_url: str, state_dir: Path, heartbeat: float = 30.0, **env: str
) -> asyncio.subprocess.Process:
    """``python -m hublink run`` (see :func:`daemon_env`); its lines go to ``daemon.log``
    beside the state dir, as journald would take them."""
    child_env = daemon_env(cloud_url, state_dir, heartbeat, **env)
    with (state_dir.parent / "daemon.log").open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hublink",
            "run",
            env=child_env,
            stdin=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )


def proc_rss(pid: int) -> int:
    """Resident set size in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_cpu(pid: int) -> float:
    """CPU seconds used so far by the live threads of ``pid``, to the nanosecond.

    The scheduler's own count (``/proc/PID/task/*/schedstat``, first field):
    ``/proc/PID/stat`` counts in clock ticks (10 ms), which is 0.05 % of a 20 s
    window, as much as the whole idle goal. Threads that ended during the
    window are not counted; an idle daemon's threads live as long as it does.
    Falls back to the ticks where the kernel keeps no schedstat.
    """
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += int((task / "schedstat").read_text().split()[0])
    except FileNotFoundError:
        total = 0
    if total:
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def started(state_dir: Path) -> bool:
    """Whether the daemon of ``state_dir`` (see :func:`daemon_env`) answers on its control
    socket, which it opens last: its start-up's imports and pauses are behind it."""
    from hublink.configfile import CONTROL_SOCKET
    from hublink.control.client import status_now

    return status_now(state_dir.parent / "run" / CONTROL_SOCKET) is not None


async def wait_for(predicate: Any, limit: float = 30.0) -> None:
    """Poll until ``predicate()`` is true, for at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition never met")
        await asyncio.sleep(0.05)


def page_and_metrics() -> tuple[str, dict[str, str]]:
    """The label, and the variables that turn on the local page (if built) and metrics."""
    env = {"HUBLINK_METRICS__LISTEN": f"127.0.0.1:{free_port()}"}
    if has_setting("web", "enabled"):
        env["HUBLINK_WEB__ENABLED"] = "true"
        env["HUBLINK_WEB__LISTEN"] = f"127.0.0.1:{free_port()}"
        return "page and metrics on", env
    return "metrics on (no local page in this build)", env


def rows() -> list[Row]:
    """Idle RSS and CPU of the daemons and their frpc beside the seed client and a bare frpc."""
    seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "20"))
    runs = [asyncio.run(measure(seconds)) for _ in range(rounds())]

    def col(key: str) -> list[float]:
        return [run[key] for run in runs]

    label = runs[0]["label"]
    window = f"({seconds:.0f} s)"
    rss_note = (
        ""
        if has_setting("web", "enabled")
        else "This build has no local page yet (no `web` section in the settings model), so "
        "the daemon runs with metrics on only; the bench turns the page on "
        "(`HUBLINK_WEB__ENABLED`, a free `HUBLINK_WEB__LISTEN`) as soon as the key exists."
    )
    cpu_note = (
        "CPU from the scheduler's nanosecond counts (`/proc/PID/task/*/schedstat`)"
        + (
            f"; a {seconds:.0f} s window is shorter than the 30 s heartbeat, so it holds "
            "one heartbeat or none: `BENCH_IDLE_SECONDS=120` for a figure to quote"
            if seconds < 30
            else ""
        )
        + (
            "; the seed client used no CPU at all in the window, so the goal is absolute "
            "and the ratio has no meaning"
            if statistics.median(col("seed_cpu")) == 0
            else ""
        )
        + "."
    )
    return [
        Row(
            f"idle RSS, connected, tunnel off, {label} {window}",
            "MiB",
            col("plain_rss"),
            col("seed_rss"),
            "seed client",
            "<= 1.75x",
            rss_note,
        ),
        Row(
            f"idle CPU, connected, tunnel off, {label} {window}",
            "%",
            col("plain_cpu"),
            col("seed_cpu"),
            "seed client",
            "< 0.05 %",
            cpu_note,
        ),
        Row(
            f"idle RSS, connected, tunnel on: hublink {window}",
            "MiB",
            col("tunnel_rss"),
            col("seed_rss"),
            "seed client",
        ),
        Row(
            f"idle CPU, connected, tunnel on: hublink {window}",
            "%",
            col("tunnel_cpu"),
            col("seed_cpu"),
            "seed client",
            "< 0.05 %",
            cpu_note,
        ),
        Row(
            f"idle CPU, tunnel on: hublink's frpc {window}",
            "%",
            col("frpc_cpu"),
            col("seed_cpu"),
            "seed client",
        ),
        Row(
            f"idle CPU, tunnel on: hublink's frpc {window}",
            "%",
            col("frpc_cpu"),
            col("bare_cpu"),
            "bare frpc, same frps",
        ),
    ]


async def main(seconds: float) -> None:
    """Run every process for ``seconds`` once and print the figures."""
    figures = await measure(seconds)
    print(f"idle footprint over {seconds:.0f} s, heartbeat 30 s ({figures['label']})")
    print(f"{'process':<34}{'RSS MiB':>10}{'CPU %':>10}")
    for key, name in LABELS.items():
        print(f"{name:<34}{figures[key + '_rss']:>10.1f}{figures[key + '_cpu']:>10.4f}")


#: The processes of one window: key → what it is.
LABELS = {
    "plain": "hublink, tunnel off, page/metrics",
    "tunnel": "hublink, tunnel on",
    "frpc": "  its frpc",
    "seed": "seed client",
    "bare": "bare frpc",
}


async def measure(seconds: float) -> dict[str, Any]:
    """One window: ``{key}_rss`` (MiB, at the end) and ``{key}_cpu`` (% of one core) per process."""
    label, extra = page_and_metrics()
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        async with frp_cloud(base / "cloud", hubs=4) as cloud, hub_app() as local_port:
            procs: dict[str, asyncio.subprocess.Process] = {}
            try:
                plain_creds, plain_dir = make_hub(cloud, base, "plain")
                tunnel_creds, tunnel_dir = make_hub(cloud, base, "tunnel")
                seed_creds, _ = make_hub(cloud, base, "seed")
                procs["plain"] = await start_daemon(cloud.url, plain_dir, **extra)
                procs["tunnel"] = await start_daemon(
                    cloud.url, tunnel_dir, **tunnel_env(cloud, local_port)
                )
                seed_uri = cloud.ws_url(
                    str(seed_creds.hub_id), seed_creds.tunnel_token.get_secret_value()
                )
                procs["seed"] = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", SEED_CLIENT, seed_uri
                )
                procs["bare"], bare_url = await start_bare_frpc(cloud, base / "bare", local_port)
                hubs = (plain_creds.hub_id, tunnel_creds.hub_id, seed_creds.hub_id)
                await wait_for(lambda: all(cloud.heartbeats(hub) for hub in hubs))
                tunnel_url = f"http://127.0.0.1:{tunnel_creds.tunnel_port}/"
                await asyncio.gather(_get_ok(tunnel_url), _get_ok(bare_url))
                await _touch(extra)
                pids = {key: proc.pid for key, proc in procs.items()}
                pids["frpc"] = await frpc_of(procs["tunnel"].pid)
                await asyncio.sleep(min(5.0, seconds / 4))  # warm-up: imports done, first beats
                start = {key: proc_cpu(pid) for key, pid in pids.items()}
                began = time.monotonic()
                await asyncio.sleep(seconds)
                elapsed = time.monotonic() - began
                figures: dict[str, Any] = {"label": label}
                for key, pid in pids.items():
                    figures[key + "_cpu"] = 100 * (proc_cpu(pid) - start[key]) / elapsed
                    figures[key + "_rss"] = proc_rss(pid) / 2**20
            finally:
                for proc in procs.values():
                    await stop(proc)
    return figures


async def _get_ok(url: str, limit: float = 30.0) -> None:
    """GET ``url`` until it answers 200 (a tunnel takes a moment to come up)."""
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(trust_env=False) as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench: {url} never answered 200")
            await asyncio.sleep(0.05)


async def _touch(extra: dict[str, str]) -> None:
    """Open the local page once and scrape ``/metrics`` once, as a shop and its Prometheus do."""
    urls = [f"http://{extra['HUBLINK_METRICS__LISTEN']}/metrics"]
    if "HUBLINK_WEB__LISTEN" in extra:
        urls.append(f"http://{extra['HUBLINK_WEB__LISTEN']}/")
    async with aiohttp.ClientSession(trust_env=False) as session:
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        await resp.read()  # any answer: the page may want its setup code
                        break
                except (aiohttp.ClientError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)


if __name__ == "__main__":
    window = float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_IDLE_SECONDS", "20"))
    asyncio.run(main(window))
