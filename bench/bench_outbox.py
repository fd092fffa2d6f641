"""Outbox drain: N events queued while disconnected, time from connect to all delivered.

The events go into ``outbox.sqlite3`` first (as ``hublink send`` does) while
the Cloud is down; then the Cloud (in this process) starts and the clock
runs from the hub's first accepted handshake to the moment the Cloud has
recorded every event, and on to the outbox being empty (acknowledged).
N defaults to 10000 (``BENCH_OUTBOX_N`` or the first argument).
Target (issue 3): under 2 s to deliver.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_idle import make_hub, start_daemon, wait_for

from hublink.devcloud import DevCloud
from hublink.link.messages import validate_event
from hublink.link.outbox import Outbox


def queue(state_dir: Path, count: int) -> float:
    """Put ``count`` plugin_installed events in the outbox; seconds it took."""
    outbox = Outbox.open(state_dir, max(count, 100_000))
    started = time.monotonic()
    try:
        for n in range(count):
            outbox.put(
                validate_event(
                    "plugin_installed",
                    {
                        "plugin_id": f"p{n}",
                        "version": "1.0.0",
                        "installed_at": "2026-01-01T00:00:00Z",
                    },
                )
            )
    finally:
        outbox.close()
    return time.monotonic() - started


def pending(state_dir: Path) -> int:
    """Events still in the outbox."""
    outbox = Outbox.open(state_dir, 100_000)
    try:
        return outbox.pending()
    finally:
        outbox.close()


async def main(count: int) -> None:
    """Queue offline, connect, time the delivery."""
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        port = cloud.port
        creds, state_dir = make_hub(cloud, base, "hub")
        hub_id = str(creds.hub_id)
        await cloud.stop()
        queued_in = await asyncio.to_thread(queue, state_dir, count)
        daemon = await start_daemon(
            cloud.url,
            state_dir,
            heartbeat=30,
            HUBLINK_WEBSOCKET__RECONNECT_MIN="0.05",
            HUBLINK_WEBSOCKET__RECONNECT_MAX="0.1",
        )
        try:
            await asyncio.sleep(0.5)  # let it find the Cloud down and back off
            await cloud.start(port=port)
            await wait_for(lambda: cloud.connections(hub_id) >= 1, limit=30)
            connected = time.monotonic()
            await wait_for(lambda: len(cloud.events(hub_id)) >= count, limit=120)
            delivered = time.monotonic() - connected
            await wait_for(lambda: pending(state_dir) == 0, limit=60)
            acked = time.monotonic() - connected
            events = cloud.events(hub_id)
            in_order = [e["plugin_id"] for e in events[:count]] == [f"p{n}" for n in range(count)]
        finally:
            daemon.terminate()
            await daemon.wait()
            await cloud.stop()
    print(f"outbox: {count} events queued offline in {queued_in:.1f} s (one durable put each)")
    print(f"{'delivered (s)':>14}{'acked (s)':>11}{'events/s':>10}{'in order':>10}")
    print(f"{delivered:>14.2f}{acked:>11.2f}{count / delivered:>10.0f}{in_order!s:>10}")
    print(f"target: delivered < 2 s -> {'met' if delivered < 2 else 'MISSED'}")


if __name__ == "__main__":
    n = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_OUTBOX_N", "10000"))
    asyncio.run(main(n))
