"""Outbox drain: N events queued while disconnected, time from connect to all delivered.

The events go into ``outbox.sqlite3`` first (as ``hublink send`` does) while
the Cloud is down; then the Cloud (in this process) starts and the clock
runs from the hub's first accepted handshake to the moment the Cloud has
recorded every event, and on to the outbox being empty (acknowledged).
N defaults to 10000 (``BENCH_OUTBOX_N`` or the first argument).
Target (issue 3): under 2 s to deliver.

:func:`rows` (for ``make bench``) times what ``hublink send`` costs per event:
``BENCH_OUTBOX_PUTS`` (default 2000) durable puts one at a time beside plain
SQLite insert + commit of the same frames with the same settings (WAL,
``synchronous=FULL``), and the cost of a put with ``BENCH_OUTBOX_DEPTH``
(default 100000) events waiting beside one with an empty queue (issue 12).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench_idle import make_hub, start_daemon, wait_for
from report import Row, interleaved

from hublink.devcloud import DevCloud
from hublink.link.messages import OutboundEvent, validate_event
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


def events(count: int, prefix: str = "p") -> list[OutboundEvent]:
    """``count`` plugin_installed events, validated before any clock starts."""
    return [
        validate_event(
            "plugin_installed",
            {
                "plugin_id": f"{prefix}{n}",
                "version": "1.0.0",
                "installed_at": "2026-01-01T00:00:00Z",
            },
        )
        for n in range(count)
    ]


def timed_puts(state_dir: Path, batch: list[OutboundEvent], depth: int = 0) -> float:
    """Seconds for ``batch`` puts one at a time, with ``depth`` events waiting already."""
    outbox = Outbox.open(state_dir, depth + len(batch) + 1)
    try:
        if depth:
            # Filled in one transaction: the fill is not what is measured.
            with outbox._write() as conn:
                conn.executemany(
                    "INSERT INTO events (id, type, frame, queued_at) VALUES (?, 't', '{}', 0)",
                    ((f"fill-{n}",) for n in range(depth)),
                )
        started = time.perf_counter()
        for event in batch:
            outbox.put(event)
        return time.perf_counter() - started
    finally:
        outbox.close()


def timed_plain_inserts(state_dir: Path, batch: list[OutboundEvent]) -> float:
    """Seconds for the same rows as plain SQLite insert + commit, WAL and synchronous=FULL."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state_dir / "plain.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
            "type TEXT NOT NULL, frame TEXT NOT NULL, queued_at REAL NOT NULL)"
        )
        started = time.perf_counter()
        for event in batch:
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO events (id, type, frame, queued_at) VALUES (?, ?, ?, ?)",
                (str(event.id), event.type, event.to_frame(), time.time()),
            )
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def rows() -> list[Row]:
    """Durable puts beside plain inserts, and a put's cost at depth beside an empty queue."""
    puts = int(os.environ.get("BENCH_OUTBOX_PUTS", "2000"))
    depth = int(os.environ.get("BENCH_OUTBOX_DEPTH", "100000"))
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        turn = iter(range(10**6))
        batch = events(puts)

        def fresh() -> Path:
            return base / str(next(turn))

        ours, plain = interleaved(
            lambda: timed_puts(fresh(), batch), lambda: timed_plain_inserts(fresh(), batch)
        )
        small = batch[: min(500, puts)]
        deep, empty = interleaved(
            lambda: timed_puts(fresh(), small, depth) / len(small) * 1000,
            lambda: timed_puts(fresh(), small) / len(small) * 1000,
        )
    return [
        Row(
            f"queue {puts:,} events, one durable `put` each",
            "s",
            ours,
            plain,
            "plain SQLite insert + commit",
            "≤ 1.5x",
        ),
        Row(
            f"one `put` with {depth:,} events waiting",
            "ms",
            deep,
            empty,
            "with an empty queue",
            "flat (≈ 1x)",
        ),
    ]


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
