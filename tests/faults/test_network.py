"""The network between the hub and the Cloud breaks; the link finds out and comes back.

A real daemon links through :class:`support.faultproxy.FaultProxy` while the
Hub application queues events; each scenario injects its fault, times how
long the daemon took to notice and to be back, and checks that no event was
lost (contract section 2: keepalive, reconnection with backoff and spread;
the outbox: at-least-once, in order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hublink.link.handshake import CLOSE_TIMEOUT
from support.cloud import HubEnv
from support.daemon import Daemons
from support.faultproxy import FaultProxy
from support.polling import wait_until
from support.reliability import Row
from support.scenario import (
    FAULT_WEBSOCKET,
    SLACK,
    LinkWatch,
    Producer,
    back_online,
    fault_hub,
    linked,
    sized,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(sized(90, 300))]

ITERATIONS = sized(1, 5)
#: A silent link: the next ping goes out within ping_interval, its pong is awaited for
#: ping_timeout, then websockets sends 1011 and waits CLOSE_TIMEOUT for an answer.
PING = FAULT_WEBSOCKET["ping_interval"] + FAULT_WEBSOCKET["ping_timeout"] + CLOSE_TIMEOUT
SPREAD = FAULT_WEBSOCKET["reconnect_spread"]


async def _repeat_live_fault(
    daemons: Daemons,
    hub: HubEnv,
    inject: Callable[[], int],
    *,
    iterations: int = ITERATIONS,
) -> dict[str, Any]:
    """Inject a fault on the live link ``iterations`` times; the worst figures."""
    daemon = await linked(daemons, hub)
    watch = await LinkWatch(daemon).start()
    detections: list[float] = []
    recoveries: list[float] = []
    async with Producer(hub) as events:
        for _ in range(iterations):
            count = len(events.arrived())
            await wait_until(lambda n=count: len(events.arrived()) >= n + 3, what="events flow")
            fault_at = watch.now()
            assert inject() >= 1, "no connection to break"
            detected = await watch.left_connected(fault_at)
            recovered = await back_online(hub, fault_at) - detected
            detections.append(detected)
            recoveries.append(recovered)
        count = len(events.arrived())
        await wait_until(lambda: len(events.arrived()) >= count + 3, what="events after the last")
    missing = await events.settle()
    await watch.stop()
    return {
        "detect_s": max(detections),
        "recover_s": max(recoveries),
        "detections": detections,
        "recoveries": recoveries,
        "queued": len(events.accepted),
        "lost": len(missing),
        "duplicates": events.duplicates(),
        "in_order": events.in_order(),
    }


def _events(data: dict[str, Any]) -> str:
    return f"{data['lost']} of {data['queued']} events lost, {data['duplicates']} duplicates" + (
        "" if data["in_order"] else ", OUT OF ORDER"
    )


def _live_row(key: str, scenario: str, rule: str, data: dict[str, Any], detect_goal: float) -> Row:
    recover_goal = SPREAD + SLACK
    passed = (
        data["detect_s"] <= detect_goal
        and data["recover_s"] <= recover_goal
        and data["lost"] == 0
        and data["in_order"]
    )
    return Row(
        key=key,
        scenario=scenario,
        rule=rule,
        iterations=len(data["detections"]),
        figure=f"detected in {data['detect_s']:.2f} s, back {data['recover_s']:.2f} s later "
        f"(worst of {len(data['detections'])}); {_events(data)}",
        goal=f"detected ≤ {detect_goal:.1f} s, back ≤ {recover_goal:.1f} s, 0 lost, in order",
        passed=passed,
        data=data,
    )


def _check(row: Row) -> None:
    assert row.data["lost"] == 0, row.figure
    assert row.data["in_order"], row.figure
    assert row.passed, row.figure


async def test_a_blackholed_link_is_found_by_its_pings_and_replaced(
    proxied_hub: HubEnv, proxy: FaultProxy, daemons: Daemons, recorder: Any
) -> None:
    data = await _repeat_live_fault(daemons, proxied_hub, proxy.blackhole)
    row = _live_row(
        "network/1-blackhole",
        "Blackhole, no FIN, no RST",
        "§2: a link that stops answering pings is lost (ping interval + timeout + close timeout)",
        data,
        detect_goal=PING + SLACK,
    )
    recorder(row)
    _check(row)


async def test_a_reset_in_the_middle_of_a_frame_is_seen_at_once(
    proxied_hub: HubEnv, proxy: FaultProxy, daemons: Daemons, recorder: Any
) -> None:
    data = await _repeat_live_fault(daemons, proxied_hub, proxy.reset_mid_frame)
    row = _live_row(
        "network/2-reset",
        "TCP RST in the middle of a frame",
        "§2: a drop without close frame (1006) reconnects after the spread delay",
        data,
        detect_goal=FAULT_WEBSOCKET["heartbeat_interval"] + SLACK,
    )
    recorder(row)
    _check(row)


async def test_a_half_open_link_is_found_by_its_pings(
    proxied_hub: HubEnv, proxy: FaultProxy, daemons: Daemons, recorder: Any
) -> None:
    data = await _repeat_live_fault(daemons, proxied_hub, proxy.half_open)
    row = _live_row(
        "network/3-half-open",
        "Half-open: the Cloud's side reset, the hub's side open and silent",
        "§2: a link that stops answering pings is lost",
        data,
        detect_goal=PING + SLACK,
    )
    recorder(row)
    _check(row)


async def test_a_slow_path_keeps_the_link_and_delivers_every_event(
    devcloud: Any, proxy: FaultProxy, daemons: Daemons, recorder: Any, tmp_path: Any
) -> None:
    latency = sized(1.0, 2.0)
    # Pings must outlast the 4 s round trip; with the defaults (20 s) they do.
    hub = fault_hub(
        devcloud,
        tmp_path / "slow",
        proxy.url,
        websocket={"ping_interval": 1.0, "ping_timeout": 6.0},
    )
    proxy.latency = latency
    daemon = await linked(daemons, hub)
    watch = await LinkWatch(daemon).start()
    held_for = sized(4.0, 30.0)
    async with Producer(hub, interval=0.1) as events:
        start = watch.now()
        await wait_until(lambda: watch.now() - start >= held_for, timeout=held_for + 5)
    missing = await events.settle(timeout=30)
    await watch.stop()
    drops = watch.reconnects(start)
    data = {
        "latency_s": latency,
        "held_s": held_for,
        "drops": drops,
        "queued": len(events.accepted),
        "lost": len(missing),
        "duplicates": events.duplicates(),
        "in_order": events.in_order(),
    }
    row = Row(
        key="network/4-latency",
        scenario=f"{latency:.0f} s added each way (a {2 * latency:.0f} s round trip)",
        rule="§2: the link holds while pongs come within ping_timeout; events in order",
        iterations=1,
        figure=f"{drops} drops in {held_for:.0f} s; {_events(data)}",
        goal="0 drops, 0 lost, in order",
        passed=drops == 0 and not missing and events.in_order(),
        data=data,
    )
    recorder(row)
    assert drops == 0, watch.errors(start)
    _check(row)


@pytest.mark.parametrize(
    ("mode", "scenario", "words"),
    [
        ("stall", "A handshake that never completes (101 status line, then nothing)", "timed out"),
        ("silent", "A Cloud that accepts TCP and never answers", "timed out"),
    ],
)
async def test_a_handshake_that_hangs_is_abandoned_and_retried(
    proxied_hub: HubEnv,
    proxy: FaultProxy,
    daemons: Daemons,
    recorder: Any,
    mode: str,
    scenario: str,
    words: str,
) -> None:
    cloud = proxied_hub.cloud
    daemon = await linked(daemons, proxied_hub)
    watch = await LinkWatch(daemon).start()
    hang_for = sized(3.0, 15.0)
    async with Producer(proxied_hub) as events:
        await wait_until(lambda: len(events.arrived()) >= 3, what="events flow")
        if mode == "stall":
            proxy.refuse_handshakes()
        else:
            proxy.go_silent()
        fault_at = watch.now()
        assert cloud.drop_hub(proxied_hub.hub_id)
        # Each attempt hangs until open_timeout (the ping timeout), then backs off.
        detected = await watch.error_seen(fault_at, words)
        attempts_before = proxy.accepted
        await wait_until(lambda: watch.now() - fault_at >= hang_for, timeout=hang_for + 5)
        attempts = proxy.accepted - attempts_before + 1
        heal_at = watch.now()
        proxy.heal()
        recovered = await back_online(proxied_hub, heal_at)
        count = len(events.arrived())
        await wait_until(lambda: len(events.arrived()) >= count + 3, what="events after")
    missing = await events.settle()
    await watch.stop()
    data = {
        "detect_s": detected,
        "recover_s": recovered,
        "attempts_while_hanging": attempts,
        "hang_s": hang_for,
        "queued": len(events.accepted),
        "lost": len(missing),
        "duplicates": events.duplicates(),
        "in_order": events.in_order(),
    }
    # Abandoned after open_timeout (= ping_timeout); the next try within the backoff ceiling.
    detect_goal = FAULT_WEBSOCKET["ping_timeout"] + SPREAD + SLACK
    recover_goal = FAULT_WEBSOCKET["ping_timeout"] + FAULT_WEBSOCKET["reconnect_max"] + SLACK
    row = Row(
        key=f"network/5-handshake-{mode}",
        scenario=scenario,
        rule="§2: an attempt that hangs is abandoned after the ping timeout, then backs off",
        iterations=attempts,
        figure=f"abandoned after {detected:.2f} s ({attempts} attempts in {hang_for:.0f} s), "
        f"back {recovered:.2f} s after the path healed; {_events(data)}",
        goal=f"abandoned ≤ {detect_goal:.1f} s, back ≤ {recover_goal:.1f} s, 0 lost",
        passed=detected <= detect_goal and recovered <= recover_goal and not missing,
        data=data,
    )
    recorder(row)
    _check(row)
