"""Cloud→Hub command latency and throughput: ``hublink run`` vs a bare websockets loop.

The reference Cloud (in this process) pushes ``plugin_update_available``
frames, each carrying its send time (``time.time_ns()``) in ``download_url``.

* hublink: "recorded" is the moment the daemon's state store records the
  update (its ``received_at``, read back from ``state.sqlite3`` once every
  record is on disk); no hooks configured.
* bare: a websockets client that receives and ``json.loads`` every frame and
  notes the time, nothing else; once with websockets' default permessage-deflate
  (as the seed's client), once without compression (as hublink's link).

Two runs each: a flood (N frames as fast as the Cloud sends them: messages/s)
and a paced run (one frame every 2 ms: latency without queueing).
N defaults to 20000 (``BENCH_COMMANDS_N`` or the first argument): a bare loop
reads 5,000 in about 0.15 s, where the connection's first moments (TCP's
window opening, the first commits) weigh as much as the steady state; the clients
take turns for ``BENCH_ROUNDS`` rounds (default 3) and the median round is shown,
since the machine is shared and single runs are noisy.
Targets (issue 3): rate >= 0.5x the bare loop's, p99 < 5 ms.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_idle import make_hub, start_daemon, started, wait_for
from report import Row

from hublink.devcloud import DevCloud

PACED_INTERVAL = 0.002
#: Frames of the flood (``BENCH_COMMANDS_N``).
FLOOD = 20000

BARE_CLIENT = r"""
import asyncio, json, sys, time
import websockets

async def main(uri, count, deflate):
    got = []
    compression = "deflate" if deflate == "deflate" else None
    async with websockets.connect(uri, max_size=2**20, compression=compression) as ws:
        print("ready", flush=True)
        async for message in ws:
            data = json.loads(message)
            if data.get("type") != "plugin_update_available":
                continue
            got.append((int(data["download_url"].rsplit("=", 1)[1]), time.time_ns()))
            if len(got) >= count:
                break
    print(json.dumps(got), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
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
        # Steady state: start-up (bench_startup's figure) is over before the first frame.
        await wait_for(lambda: cloud.heartbeats(hub_id) and started(state_dir))
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


async def run_bare(
    cloud: DevCloud, base: Path, count: int, deflate: str
) -> dict[str, tuple[float, ...]]:
    """The same runs against the bare websockets loop (``deflate``: "deflate" or "none")."""
    results = {}
    for run, paced in (("flood", False), ("paced", True)):
        creds, _ = make_hub(cloud, base, f"bare-{deflate}-{run}")
        hub_id = str(creds.hub_id)
        n = count if not paced else min(count, 2000)
        uri = cloud.ws_url(hub_id, creds.tunnel_token.get_secret_value())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BARE_CLIENT, uri, str(n), deflate, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        await proc.stdout.readline()
        await wait_for(lambda hub_id=hub_id: cloud.connections(hub_id) >= 1)
        await push(cloud, hub_id, n, run, paced)
        out = await proc.stdout.read()
        await proc.wait()
        results[run] = summarize([tuple(pair) for pair in json.loads(out)])
    return results


def median_of(runs: list[dict[str, tuple[float, ...]]]) -> dict[str, tuple[float, ...]]:
    """Per run kind, the round with the median rate."""
    out = {}
    for kind in ("flood", "paced"):
        ordered = sorted((r[kind] for r in runs), key=lambda row: row[0])
        out[kind] = ordered[len(ordered) // 2]
    return out


async def collect(count: int, rounds: int) -> dict[str, list[dict[str, tuple[float, ...]]]]:
    """Every client's results, ``rounds`` times, interleaved (the machine is shared)."""
    collected: dict[str, list[dict[str, tuple[float, ...]]]] = {
        "deflate": [],
        "none": [],
        "hub": [],
    }
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        # The sender stamps each frame before pushing it: a full collection of
        # this process's own heap in between would count as the client's latency.
        gc.collect()
        gc.freeze()
        try:
            for r in range(rounds):
                collected["deflate"].append(await run_bare(cloud, base / f"r{r}", count, "deflate"))
                collected["none"].append(await run_bare(cloud, base / f"r{r}", count, "none"))
                collected["hub"].append(await run_hublink(cloud, base / f"r{r}", count))
        finally:
            await cloud.stop()
    return collected


def rows() -> list[Row]:
    """The flood rate and the paced p99 of hublink at ``info``, beside the bare loops."""
    from report import rounds

    count = int(os.environ.get("BENCH_COMMANDS_N", str(FLOOD)))
    got = asyncio.run(collect(count, rounds()))

    def runs(client: str, kind: str, field: int) -> list[float]:
        return [r[kind][field] for r in got[client]]

    flood = f"Cloud→Hub flood of {count:,}, `info`, journal format"
    return [
        Row(
            flood,
            "msg/s",
            runs("hub", "flood", 0),
            runs("none", "flood", 0),
            "bare websockets loop, no compression",
            ">= 0.5x",
        ),
        Row(
            flood,
            "msg/s",
            runs("hub", "flood", 0),
            runs("deflate", "flood", 0),
            "bare websockets loop, deflate (seed)",
            ">= 0.5x",
        ),
        Row(
            "Cloud→Hub paced 1 per 2 ms, p99 latency",
            "ms",
            runs("hub", "paced", 2),
            runs("none", "paced", 2),
            "bare loop, no compression",
            "< 5 ms",
        ),
    ]


def markdown() -> str:
    """BENCHMARKS.md's section after the table: the receive path's steps, timed one by one
    (bench/receive_steps.py, in a process of its own: it sets up the daemon's logging)."""
    import receive_steps

    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("receive_steps.py")), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    measured = [(name, value) for name, value in json.loads(done.stdout.splitlines()[-1])]
    return receive_steps.markdown(measured)


async def main(count: int, rounds: int) -> None:
    """Run every client ``rounds`` times, interleaved (the machine is shared); print medians."""
    collected = await collect(count, rounds)
    bare, bare_plain, hub = (median_of(collected[k]) for k in ("deflate", "none", "hub"))
    print(
        f"Cloud→Hub plugin_update_available, no hooks; flood {count}, paced 2000 at 1 per 2 ms; "
        f"median of {rounds} interleaved rounds"
    )
    print(f"{'client':<26}{'run':<7}{'msg/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    rows = (
        ("bare (deflate, default)", bare),
        ("bare (no compression)", bare_plain),
        ("hublink (no compression)", hub),
    )
    for label, results in rows:
        for run in ("flood", "paced"):
            rate, p50, p99 = results[run]
            print(f"{label:<26}{run:<7}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}")
    print("hublink flood rates per round:", [round(r["flood"][0]) for r in collected["hub"]])
    print(
        f"rate ratio hublink/bare: {hub['flood'][0] / bare['flood'][0]:.2f} vs the default loop, "
        f"{hub['flood'][0] / bare_plain['flood'][0]:.2f} vs the uncompressed one (target >= 0.5); "
        f"hublink paced p99 {hub['paced'][2]:.2f} ms (target < 5 ms)"
    )


if __name__ == "__main__":
    n = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_COMMANDS_N", str(FLOOD)))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    asyncio.run(main(n, rounds))
