"""A reconnect storm: a fleet linked to the reference Cloud, which restarts (1012), then sheds load.

The fleet is real links: many :class:`hublink.link.connection.Link` in one
child process (support/fleet.py) plus real daemons, each hub registered in
the Cloud with its own credentials. The Cloud records every handshake's
arrival, so the test sees the storm from the Cloud's side.

Contract section 2: after a 1012 the first attempt waits a random delay drawn
uniformly from [0, min(reconnect_spread, reconnect_max)], so the fleet comes
back evenly over the spread window, and a handshake answered 503 with
``Retry-After`` waits at least that long.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hublink.config import TunnelSettings, WebSocketSettings
from hublink.devcloud import CloudOptions, DevCloud
from support.cloud import make_hub_env
from support.daemon import HublinkProcess
from support.fleet import write_fleet_file
from support.polling import wait_until
from support.reliability import Row
from support.scenario import SLACK, full_size, sized
from support.storm import clumping_limit, extrapolation, first_accepted, per_second

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(sized(240, 900))]

TESTS = Path(__file__).resolve().parent.parent
LINKS = sized(200, 1000)
DAEMONS = sized(5, 50)
SPREAD = sized(4.0, 10.0)
#: The contract's promise: everyone back within the spread window plus this.
BACK_WITHIN = 10.0
RETRY_AFTER = sized(3.0, 5.0)


class Fleet:
    """The Cloud, the in-process links (a child process) and the daemons of one storm."""

    def __init__(self, cloud: DevCloud, base: Path) -> None:
        self.cloud = cloud
        self.base = base
        self.hub_ids: list[str] = []
        self.daemons: list[HublinkProcess] = []
        self.links: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Register every hub, start the links and the daemons, wait until all are linked."""
        websocket = WebSocketSettings(reconnect_spread=SPREAD)
        hubs = [self.cloud.create_hub(name=f"fleet {i}") for i in range(LINKS)]
        self.hub_ids += [hub["hub_id"] for hub in hubs]
        fleet_file = write_fleet_file(
            self.base / "fleet.json",
            cloud_url=self.cloud.url,
            state_dir=self.base / "fleet-state",
            websocket=websocket.model_dump(),
            hubs=hubs,
        )
        # A small environment: websockets looks for a proxy in it at every connect,
        # which a thousand links pay a thousand times over in a big one.
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(TESTS), "HOME": str(self.base)}
        with (self.base / "fleet.log").open("ab") as log:
            self.links = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "support.fleet",
                str(fleet_file),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.links.stdout is not None
        # The links come up alone: beside fifty starting daemons on two cores they
        # took over a minute.
        line = await asyncio.wait_for(self.links.stdout.readline(), 180)
        assert line.startswith(b"fleet running"), line
        for number in range(DAEMONS):
            hub = make_hub_env(
                self.cloud,
                self.base / f"daemon{number}",
                websocket=websocket,
                tunnel=TunnelSettings(enabled=False),
            )
            self.hub_ids.append(hub.hub_id)
            daemon = HublinkProcess(hub, name=f"daemon{number}")
            daemon.extra_env["HUBLINK_LOG__LEVEL"] = "info"
            self.daemons.append(await daemon.start())
        await self.all_linked(timeout=sized(120, 300))

    async def all_linked(self, timeout: float) -> None:
        """Wait until every hub of the fleet has an open link."""
        await wait_until(
            lambda: all(self.cloud.link(h).connected for h in self.hub_ids),
            timeout=timeout,
            what=f"all {len(self.hub_ids)} hubs linked",
        )

    async def stop(self) -> None:
        """Stop the links and the daemons."""
        if self.links is not None and self.links.returncode is None:
            self.links.terminate()
            try:
                await asyncio.wait_for(self.links.wait(), 20)
            except TimeoutError:
                self.links.kill()
                await self.links.wait()
        await asyncio.gather(*(daemon.stop() for daemon in self.daemons))


@pytest.fixture
async def fleet(tmp_path: Path, devcloud_signing_key: rsa.RSAPrivateKey) -> AsyncIterator[Fleet]:
    """A Cloud with room for the whole fleet's tunnel ports, and the fleet linked to it."""
    cloud = DevCloud(
        tmp_path / "cloud",
        CloudOptions(
            signing_key=devcloud_signing_key, port_range=(20000, 20000 + LINKS + DAEMONS + 10)
        ),
    )
    await cloud.start()
    storm = Fleet(cloud, tmp_path)
    try:
        await storm.start()
        yield storm
    finally:
        await storm.stop()
        await cloud.stop()


async def test_after_a_restart_with_1012_the_fleet_comes_back_spread_out(
    fleet: Fleet, recorder: Any
) -> None:
    cloud = fleet.cloud
    size = len(fleet.hub_ids)
    port = cloud.port
    restart_at = time.monotonic()
    await cloud.stop(code=1012)
    await cloud.start(port=port)
    restart_s = time.monotonic() - restart_at
    await wait_until(
        lambda: len(first_accepted(cloud, fleet.hub_ids, restart_at)) == size,
        timeout=SPREAD + BACK_WITHIN + 60,
        what="the whole fleet back",
    )
    arrivals = first_accepted(cloud, fleet.hub_ids, restart_at)
    counts = per_second(arrivals.values())
    busiest = max(counts)
    back_in = max(arrivals.values())
    # Hubs whose first attempt found the Cloud away (their extra attempts are refused
    # TCP connections, which the Cloud never sees): the ones that came after their
    # spread window plus a backoff step.
    retried = sum(1 for offset in arrivals.values() if offset > SPREAD + restart_s)
    limit = clumping_limit(size, SPREAD, full=full_size())
    passed = busiest <= limit and back_in <= SPREAD + BACK_WITHIN
    histogram = " ".join(str(count) for count in counts)
    row = Row(
        key="storm/1-restart",
        scenario=f"Reconnect storm: {LINKS} links in one process + {DAEMONS} daemons, the Cloud "
        f"restarts with 1012 (reconnect_spread {SPREAD:g} s)",
        rule="§2: after 1012 the first attempt waits uniform [0, min(spread, max)]: no clumping",
        iterations=size,
        figure=f"busiest second {busiest} handshakes (even share {size / SPREAD:.0f}/s); "
        f"all back in {back_in:.1f} s; per second: {histogram}",
        goal=f"busiest ≤ {limit:.0f} "
        + ("(1.3x the share)" if full_size() else "(share + 4 sd: a short fleet is noisy)")
        + f", all back ≤ {SPREAD + BACK_WITHIN:g} s",
        passed=passed,
        notes=[
            "Handshakes accepted per second after the restart (second: count): "
            + ", ".join(f"{second}: {count}" for second, count in enumerate(counts)),
            "",
            *extrapolation(
                fleet=size,
                spread=SPREAD,
                busiest=busiest,
                back_in=back_in,
                restart_s=restart_s,
                retried=retried,
            ),
        ],
        data={"counts": counts, "restart_s": restart_s, "back_in": back_in, "size": size},
    )
    recorder(row)
    assert back_in <= SPREAD + BACK_WITHIN, histogram
    assert busiest <= limit, histogram

    # Then the Cloud is overloaded: it closes every link and answers 503 + Retry-After.
    await fleet.all_linked(timeout=30)
    cloud.fail_next("/ws/hub/", 503, count=10**9, retry_after=RETRY_AFTER)
    shed_at = time.monotonic()
    await asyncio.gather(*(cloud.close_hub(h, 1012, "overloaded") for h in fleet.hub_ids))
    window = SPREAD + 1
    await wait_until(lambda: time.monotonic() - shed_at >= window, timeout=window + 5)
    cloud.faults.clear()
    cleared_at = time.monotonic()
    await wait_until(
        lambda: len(first_accepted(cloud, fleet.hub_ids, shed_at)) == size,
        timeout=RETRY_AFTER + SPREAD + 60,
        what="the whole fleet back after the 503s",
    )
    gaps: list[float] = []
    refused = 0
    for hub_id in fleet.hub_ids:
        attempts = [a for a in cloud.handshakes(hub_id) if a.at >= shed_at]
        refused += sum(1 for a in attempts if a.status == 503)
        gaps += [b.at - a.at for a, b in itertools.pairwise(attempts) if a.status == 503]
    shortest = min(gaps)
    back_after = max(first_accepted(cloud, fleet.hub_ids, shed_at).values()) - (
        cleared_at - shed_at
    )
    # Every hub's wait after a 503 is max(its backoff, Retry-After); timers fire late, not
    # early. Once the Cloud takes handshakes again, a hub waits out at most that wait.
    back_goal = RETRY_AFTER + SPREAD + SLACK
    pushback = Row(
        key="storm/2-503",
        scenario=f"The Cloud sheds the same fleet: 1012, then 503 with Retry-After: "
        f"{RETRY_AFTER:g} for {window:g} s",
        rule="§2: a handshake answered 503 with Retry-After waits at least that long",
        iterations=refused,
        figure=f"{refused} handshakes refused ({refused / size:.1f} per hub in {window:g} s); "
        f"shortest wait after a 503 {shortest:.2f} s; all back {back_after:.1f} s after the "
        "Cloud took handshakes again",
        goal=f"every wait ≥ {RETRY_AFTER:g} s, all back ≤ {back_goal:g} s",
        passed=shortest >= RETRY_AFTER - 0.01 and back_after <= back_goal,
        data={"refused": refused, "shortest": shortest, "back_after": back_after},
    )
    recorder(pushback)
    assert shortest >= RETRY_AFTER - 0.01, sorted(gaps)[:10]
    assert back_after <= back_goal, pushback.figure
