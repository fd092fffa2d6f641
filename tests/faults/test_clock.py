"""The wall clock jumps an hour while the daemon runs (libfaketime, from Debian's faketime).

A box without an RTC boots in 1970 or at its last shutdown and NTP steps the
clock later; an operator fixes a wrong time zone by hand. Only the wall clock
jumps (``CLOCK_REALTIME``); the monotonic clock does not, on Linux, and so
hublink's timers (heartbeats, keepalive, backoff) must not notice. Contract
section 2: heartbeats keep their interval, the link holds, events arrive.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hublink.devcloud import DevCloud
from support.daemon import Daemons
from support.polling import wait_until
from support.reliability import Row
from support.scenario import FAULT_WEBSOCKET, SLACK, LinkWatch, Producer, fault_hub, linked, sized

pytestmark = [pytest.mark.faults, pytest.mark.timeout(sized(90, 180))]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
#: The wall clock's offset after each jump, in hours: +1 h, back (-1 h), -1 h (and back).
JUMPS = sized((1, 0, -1), (1, 0, -1, 0))


def _offset_file(path: Path, hours: int) -> None:
    # Replaced atomically: libfaketime must never read a half-written offset.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{hours:+d}h\n" if hours else "+0\n")
    tmp.replace(path)


def _skew(beat: dict[str, Any]) -> float:
    """How far the hub's heartbeat timestamp is from the Cloud's clock, in seconds."""
    stamp = datetime.fromisoformat(beat["timestamp"].replace("Z", "+00:00"))
    received: datetime = beat["received_at"]
    return (stamp - received.astimezone(UTC)).total_seconds()


async def test_the_wall_clock_jumping_an_hour_either_way_changes_nothing(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} is missing; run `make tools` (Debian's faketime)")
    offset = tmp_path / "faketime-offset"
    _offset_file(offset, 0)
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        # Re-read the offset every second, so the running daemon sees the jump.
        "FAKETIME_CACHE_DURATION": "1",
        # Only the wall clock jumps, as on a real box (CLOCK_MONOTONIC never does).
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        # libfaketime 0.9.10's "monotonic fix" rewrites the GIL's timed condition waits;
        # worker threads then wait up to ~50 ms for the GIL and the daemon runs 5x slower.
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    }
    hub = fault_hub(devcloud, tmp_path / "hub")
    daemon = await linked(daemons, hub, env=env)
    watch = await LinkWatch(daemon).start()
    hold = sized(1.5, 15.0)
    interval = FAULT_WEBSOCKET["heartbeat_interval"]
    seen_in: list[float] = []
    gaps: list[float] = []
    async with Producer(hub) as events:
        start = watch.now()
        for hours in JUMPS:
            jumped_at = watch.now()
            beats_before = len(devcloud.heartbeats(hub.hub_id))
            _offset_file(offset, hours)

            def jumped(n: int = beats_before, h: int = hours) -> bool:
                new = devcloud.heartbeats(hub.hub_id)[n:]
                return any(abs(_skew(beat) - 3600 * h) < 60 for beat in new)

            await wait_until(jumped, timeout=10, what=f"heartbeats stamped {hours:+d} h")
            seen_in.append(watch.now() - jumped_at)
            await wait_until(lambda t0=jumped_at: watch.now() - t0 >= hold, timeout=hold + 5)
            received = [b["received_at"] for b in devcloud.heartbeats(hub.hub_id)[beats_before:]]
            gaps += [(b - a).total_seconds() for a, b in itertools.pairwise(received)]
    missing = await events.settle()
    drops = watch.reconnects(start)
    await watch.stop()
    worst_gap = max(gaps)
    gap_goal = interval + SLACK
    row = Row(
        key="clock/1-jump",
        scenario="Wall clock jumps +1 h, back, -1 h"
        + (", back" if len(JUMPS) > 3 else "")
        + " (libfaketime, monotonic untouched)",
        rule="§2: heartbeats every heartbeat_interval, the link holds; timers run on the "
        "monotonic clock",
        iterations=len(JUMPS),
        figure=f"jump seen in heartbeat stamps after ≤ {max(seen_in):.1f} s; {drops} link drops; "
        f"longest heartbeat gap {worst_gap:.2f} s (interval {interval} s); "
        f"{len(missing)} of {len(events.accepted)} events lost",
        goal=f"0 drops, gaps ≤ {gap_goal:.1f} s, 0 lost",
        passed=drops == 0 and worst_gap <= gap_goal and not missing,
        data={"seen_in": seen_in, "worst_gap": worst_gap, "drops": drops},
    )
    recorder(row)
    assert drops == 0, watch.errors(start)
    assert not missing
    assert row.passed, row.figure
