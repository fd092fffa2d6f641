"""Cloud→Hub command latency and throughput: ``hublink run`` vs a bare websockets loop.

The reference Cloud (in this process) pushes ``plugin_update_available``
frames, each carrying its send time (``time.time_ns()``) in ``download_url``.

* hublink: "recorded" is the moment the daemon's state store records the
  update (its ``received_at``, read back from ``state.sqlite3`` once every
  record is on disk); no hooks configured.
* bare: a websockets client that receives and ``json.loads`` every frame and
  notes the time, nothing else.

Two runs each: a flood (N frames as fast as the Cloud sends them: messages/s)
and a paced run (one frame every 2 ms: latency without queueing).
N defaults to 10000 (``BENCH_COMMANDS_N`` or the first argument).
Targets (issue 3): rate >= 0.5x the bare loop's, p99 < 5 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_idle import make_hub, start_daemon, wait_for

from hublink.devcloud import DevCloud

PACED_INTERVAL = 0.002

BARE_CLIENT = r"""
import asyncio, json, sys, time
import websockets

async def main(uri, count):
    got = []
    async with websockets.connect(uri, max_size=2**20) as ws:
        print("ready", flush=True)
        async for message in ws:
            data = json.loads(message)
            if data.get("type") != "plugin_update_available":
                continue
            got.append((int(data["download_url"].rsplit("=", 1)[1]), time.time_ns()))
            if len(got) >= count:
                break
    print(json.dumps(got), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def frame(n: int, run: str) -> str:
    """One plugin_update_available carrying its send time."""
    return json.dumps(
        {
            "type": "plugin_update_available",
            "plugin_id": f"{run}-{n}",
            "current_version": "1.0.0",
            "new_version": "1.0.1",
            "download_url": f"https://cloud.example/dl?t={time.time_ns()}",
        }
    )


async def push(cloud: DevCloud, hub_id: str, count: int, run: str, paced: bool) -> None:
    """Send ``count`` frames, flat out or one every PACED_INTERVAL."""
    next_at = time.monotonic()
    for n in range(count):
        if paced:
            next_at += PACED_INTERVAL
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        assert await cloud.push(hub_id, frame(n, run))


def recorded(state_dir: Path, run: str) -> list[tuple[int, int]]:
    """(sent ns, recorded ns) of every update of ``run`` on disk in the daemon's store."""
    path = state_dir / "state.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT value FROM records WHERE kind = 'plugin_update' AND key LIKE ?", (run + "-%",)
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    pairs = []
    for (value,) in rows:
        item = json.loads(value)
        sent = int(item["download_url"].rsplit("=", 1)[1])
        at = datetime.fromisoformat(item["received_at"].replace("Z", "+00:00"))
        pairs.append((sent, int(at.timestamp() * 1e9)))
    return pairs


def summarize(pairs: list[tuple[int, int]]) -> tuple[float, float, float]:
    """(messages/s, p50 ms, p99 ms)."""
    latencies = sorted((done - sent) / 1e6 for sent, done in pairs)
    span = (max(done for _, done in pairs) - min(sent for sent, _ in pairs)) / 1e9
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(pairs) / span, statistics.median(latencies), p99


async def run_hublink(cloud: DevCloud, base: Path, count: int) -> dict[str, tuple[float, ...]]:
    """Flood and paced runs against ``hublink run``."""
    creds, state_dir = make_hub(cloud, base, "hublink")
    hub_id = str(creds.hub_id)
    daemon = await start_daemon(cloud.url, state_dir)
    try:
        await wait_for(lambda: cloud.heartbeats(hub_id))
        results = {}
        for run, paced in (("flood", False), ("paced", True)):
            n = count if not paced else min(count, 2000)
            await push(cloud, hub_id, n, run, paced)
            await wait_for(lambda run=run, n=n: len(recorded(state_dir, run)) >= n, limit=120)
            results[run] = summarize(recorded(state_dir, run))
        return results
    finally:
        daemon.terminate()
        await daemon.wait()


async def run_bare(cloud: DevCloud, base: Path, count: int) -> dict[str, tuple[float, ...]]:
    """The same runs against the bare websockets loop."""
    results = {}
    for run, paced in (("flood", False), ("paced", True)):
        creds, _ = make_hub(cloud, base, f"bare-{run}")
        hub_id = str(creds.hub_id)
        n = count if not paced else min(count, 2000)
        uri = cloud.ws_url(hub_id, creds.tunnel_token.get_secret_value())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BARE_CLIENT, uri, str(n), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        await proc.stdout.readline()
        await wait_for(lambda hub_id=hub_id: cloud.connections(hub_id) >= 1)
        await push(cloud, hub_id, n, run, paced)
        out = await proc.stdout.read()
        await proc.wait()
        results[run] = summarize([tuple(pair) for pair in json.loads(out)])
    return results


async def main(count: int) -> None:
    """Run both, print the table."""
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        try:
            bare = await run_bare(cloud, base, count)
            hub = await run_hublink(cloud, base, count)
        finally:
            await cloud.stop()
    print(f"Cloud→Hub plugin_update_available, no hooks; flood {count}, paced 2000 at 1 per 2 ms")
    print(f"{'client':<10}{'run':<7}{'msg/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for label, results in (("bare", bare), ("hublink", hub)):
        for run in ("flood", "paced"):
            rate, p50, p99 = results[run]
            print(f"{label:<10}{run:<7}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}")
    ratio = hub["flood"][0] / bare["flood"][0]
    print(
        f"rate ratio hublink/bare: {ratio:.2f} (target >= 0.5); "
        f"hublink paced p99 {hub['paced'][2]:.2f} ms (target < 5 ms)"
    )


if __name__ == "__main__":
    n = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_COMMANDS_N", "10000"))
    asyncio.run(main(n))
