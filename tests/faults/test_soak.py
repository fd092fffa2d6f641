"""A soak: heartbeats every 50 ms and the link dropped every half second, for minutes.

A daemon that leaks a task, a socket or a buffer per connection dies on a
flaky uplink after weeks; here it gets a week's worth of reconnections in
minutes. Every sample reads the daemon's RSS, open fds and threads from
/proc and its asyncio tasks from the control API (``GET /v1/debug``). Goal:
RSS grows by less than 5 MB, the rest stays flat, no event is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hublink.control import request
from hublink.devcloud import DevCloud
from support.daemon import Daemons, HublinkProcess
from support.polling import wait_until
from support.reliability import Row
from support.scenario import LinkWatch, Producer, fault_hub, linked, sized

DURATION = sized(20.0, 600.0)
SAMPLE_EVERY = sized(2.5, 10.0)
#: Samples taken before this are warm-up: caches, the thread pool, the first reconnects.
WARM_UP = sized(5.0, 30.0)
DROP_EVERY = 0.5
RSS_GOAL_MB = 5.0
#: How far the later samples' median may sit above the earlier ones' without a leak.
SLACK = {"fds": 1, "threads": 1, "tasks": 2}

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(DURATION + 120)]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


@dataclass(frozen=True)
class Sample:
    """One reading of the daemon's resources."""

    at: float
    rss_mb: float
    fds: int
    threads: int
    tasks: int


def sample(daemon: HublinkProcess, at: float) -> Sample:
    """Read RSS, fds and threads from /proc, tasks from ``GET /v1/debug``."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
    )
    answer = request(daemon.settings.control_socket, "GET", "/v1/debug")
    assert answer is not None and answer[0] == 200, answer
    return Sample(
        at=at,
        rss_mb=int(fields["VmRSS"].split()[0]) / 1024,
        fds=len(list(Path(f"/proc/{daemon.pid}/fd").iterdir())),
        threads=int(fields["Threads"]),
        tasks=int(answer[1]["tasks"]),
    )


async def test_a_soak_of_fast_heartbeats_and_drops_leaks_nothing(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    hub = fault_hub(
        devcloud,
        tmp_path / "hub",
        websocket={
            "heartbeat_interval": 0.05,
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
            "reconnect_spread": 0.1,
            "ping_interval": 1.0,
            "ping_timeout": 2.0,
        },
    )
    daemon = await linked(daemons, hub)
    watch = await LinkWatch(daemon, period=0.25).start()
    drops = 0

    async def dropper() -> None:
        nonlocal drops
        while True:
            await asyncio.sleep(DROP_EVERY)
            drops += devcloud.drop_hub(hub.hub_id)

    samples: list[Sample] = []
    start = watch.now()
    beats = len(devcloud.heartbeats(hub.hub_id))
    async with Producer(hub, interval=0.1) as events:
        dropping = asyncio.create_task(dropper())
        try:
            for number in range(int(DURATION / SAMPLE_EVERY) + 1):
                due = start + number * SAMPLE_EVERY
                await wait_until(lambda t=due: watch.now() >= t, timeout=SAMPLE_EVERY + 5)
                samples.append(await asyncio.to_thread(sample, daemon, watch.now() - start))
        finally:
            dropping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dropping
    missing = await events.settle(timeout=60)
    await watch.stop()
    beats = len(devcloud.heartbeats(hub.hub_id)) - beats
    steady = [s for s in samples if s.at >= WARM_UP]
    first, last = steady[0], steady[-1]
    growth = max(s.rss_mb for s in steady[-3:]) - first.rss_mb
    # A sample may land while the link is down (fewer tasks) or a request is in flight
    # (more): a leak shows as the later half sitting above the earlier half.
    half = len(steady) // 2
    flat = {
        name: statistics.median(getattr(s, name) for s in steady[half:])
        - statistics.median(getattr(s, name) for s in steady[:half])
        <= slack
        for name, slack in SLACK.items()
    }
    passed = growth < RSS_GOAL_MB and all(flat.values()) and not missing
    row = Row(
        key="soak/1-heartbeats-and-drops",
        scenario=f"Soak, {_duration(DURATION)}: heartbeat every 50 ms, the link dropped every "
        f"{DROP_EVERY} s",
        rule="no resource grows with the number of connections (a flaky uplink for weeks)",
        iterations=drops,
        figure=f"RSS {first.rss_mb:.1f} → {last.rss_mb:.1f} MB ({growth:+.1f}), fds "
        f"{first.fds} → {last.fds}, threads {first.threads} → {last.threads}, tasks "
        f"{first.tasks} → {last.tasks}; {drops} drops, {beats:,} heartbeats, "
        f"{len(missing)} of {len(events.accepted)} events lost",
        goal=f"RSS +< {RSS_GOAL_MB:g} MB, fds/threads/tasks flat (median of the later half "
        "within 1-2 of the earlier half's), 0 lost",
        passed=passed,
        notes=[
            "| s | RSS MB | fds | threads | tasks |",
            "|---|---|---|---|---|",
            *(
                f"| {s.at:.0f} | {s.rss_mb:.1f} | {s.fds} | {s.threads} | {s.tasks} |"
                for s in samples
            ),
        ],
        data={"samples": [vars(s) for s in samples], "drops": drops, "beats": beats},
    )
    recorder(row)
    assert not missing
    assert growth < RSS_GOAL_MB, row.notes
    assert all(flat.values()), (flat, row.notes)
