"""Idle footprint: ``hublink run`` vs the seed document's minimal client, side by side.

Both connect to the reference Cloud (in this process) with a 30 s heartbeat;
after a warm-up, RSS and CPU time of each process are sampled over the
window (default 120 s; ``BENCH_IDLE_SECONDS`` or the first argument to shorten).

Targets (issue 3): RSS <= 1.5x the seed client's, CPU < 0.1 % of one core.

The other benches import the helpers below (``make_hub``, ``start_daemon``,
``proc_rss``, ``proc_cpu``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import Row, rounds

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


def daemon_env(
    cloud_url: str, state_dir: Path, heartbeat: float = 30.0, **env: str
) -> dict[str, str]:
    """The environment of ``hublink run`` for the hub in ``state_dir``, logging as the unit does.

    Default log level (``info``, or ``BENCH_LOG_LEVEL``) in the journal format.
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
        # The page on, as by default, but on a free port: 8002 may be taken on this box.
        HUBLINK_WEB__LISTEN="127.0.0.1:0",
    )
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
    """User + system CPU seconds used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def wait_for(predicate: Any, limit: float = 30.0) -> None:
    """Poll until ``predicate()`` is true, for at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition never met")
        await asyncio.sleep(0.05)


def rows() -> list[Row]:
    """Idle RSS and CPU of the connected daemon beside the seed client (tunnel off)."""
    seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "20"))
    rss: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds()):
        (_, hub_rss, _, _, hub_cpu), (_, seed_rss, _, _, seed_cpu) = asyncio.run(measure(seconds))
        rss[0].append(hub_rss / 2**20)
        rss[1].append(seed_rss / 2**20)
        cpu[0].append(hub_cpu)
        cpu[1].append(seed_cpu)
    return [
        Row(
            f"idle RSS, connected, tunnel off, page on ({seconds:.0f} s)",
            "MiB",
            *rss,
            "seed client",
            "<= 1.75x",
        ),
        Row(
            f"idle CPU, connected, tunnel off, page on ({seconds:.0f} s)",
            "%",
            *cpu,
            "seed client",
            "< 0.05 %",
        ),
    ]


async def main(seconds: float) -> None:
    """Run both clients for ``seconds`` and print the table."""
    (hub, seed) = await measure(seconds)
    print(f"idle footprint over {seconds:.0f} s, heartbeat 30 s")
    print(f"{'process':<14}{'RSS MiB':>10}{'peak MiB':>10}{'CPU s':>9}{'CPU %':>9}")
    for label, rss, top, cpu, pct in (hub, seed):
        print(f"{label:<14}{rss / 2**20:>10.1f}{top / 2**20:>10.1f}{cpu:>9.2f}{pct:>9.3f}")
    print(
        f"RSS ratio hublink/seed: {hub[1] / seed[1]:.2f} (target <= 1.5); "
        f"hublink CPU {hub[4]:.3f} % (target < 0.1 %)"
    )


Sample = tuple[str, int, int, float, float]


async def measure(seconds: float) -> tuple[Sample, Sample]:
    """(label, RSS, peak RSS, CPU s, CPU %) of the daemon and of the seed client."""
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        procs: list[asyncio.subprocess.Process] = []
        try:
            hub_creds, state_dir = make_hub(cloud, base, "hublink")
            seed_creds, _ = make_hub(cloud, base, "seed")
            daemon = await start_daemon(cloud.url, state_dir)
            procs.append(daemon)
            seed_uri = cloud.ws_url(
                str(seed_creds.hub_id), seed_creds.tunnel_token.get_secret_value()
            )
            seed = await asyncio.create_subprocess_exec(sys.executable, "-c", SEED_CLIENT, seed_uri)
            procs.append(seed)
            await wait_for(
                lambda: cloud.heartbeats(hub_creds.hub_id) and cloud.heartbeats(seed_creds.hub_id)
            )
            await asyncio.sleep(min(5.0, seconds / 4))  # warm-up: imports done, first beats sent
            start = {p.pid: proc_cpu(p.pid) for p in procs}
            peak = {p.pid: proc_rss(p.pid) for p in procs}
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                await asyncio.sleep(1.0)
                for p in procs:
                    peak[p.pid] = max(peak[p.pid], proc_rss(p.pid))
            elapsed = time.monotonic() - began
            rows: list[Sample] = []
            for label, p in (("hublink run", daemon), ("seed client", seed)):
                cpu = proc_cpu(p.pid) - start[p.pid]
                rows.append((label, proc_rss(p.pid), peak[p.pid], cpu, 100 * cpu / elapsed))
        finally:
            for p in procs:
                if p.returncode is None:
                    p.terminate()
                    await p.wait()
            await cloud.stop()
    return rows[0], rows[1]


if __name__ == "__main__":
    window = float(
        sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_IDLE_SECONDS", "120")
    )
    asyncio.run(main(window))
