"""The Cloud itself misbehaves: it asks hubs to wait (429/503 + Retry-After) or restarts.

Contract section 2: a handshake answered 429 or 503 with ``Retry-After``
waits at least that long; a close with 1012 (service restart) is followed by
a first attempt within ``reconnect_spread``, then the usual backoff while the
Cloud is still away. The Hub application queues events all along; none may
be lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hublink.devcloud import DevCloud
from support.daemon import Daemons
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

RETRY_AFTER = 2.0


def _events(events: Producer, missing: list[str]) -> str:
    return (
        f"{len(missing)} of {len(events.accepted)} events lost, "
        f"{events.duplicates()} duplicates" + ("" if events.in_order() else ", OUT OF ORDER")
    )


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_on_the_handshake_holds_the_hub_back(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any, status: int
) -> None:
    # Retry-After is honoured up to max(unauthorized_retry, reconnect_max): room for it here.
    hub = fault_hub(devcloud, tmp_path / "hub", websocket={"unauthorized_retry": 30.0})
    daemon = await linked(daemons, hub)
    watch = await LinkWatch(daemon).start()
    iterations = sized(1, 3)
    waits: list[float] = []
    async with Producer(hub) as events:
        for _ in range(iterations):
            count = len(events.arrived())
            await wait_until(lambda n=count: len(events.arrived()) >= n + 3, what="events flow")
            devcloud.fail_next("/ws/hub/", status, retry_after=RETRY_AFTER)
            fault_at = watch.now()
            await devcloud.close_hub(hub.hub_id, code=1012, reason="restarting")
            # The refused attempt, then the next one: how long the hub held back.
            await wait_until(
                lambda t0=fault_at: any(
                    h.status == status and h.at >= t0 for h in hub_handshakes(hub)
                ),
                what=f"the {status}",
            )
            refused_at = next(
                h.at for h in hub_handshakes(hub) if h.status == status and h.at >= fault_at
            )
            waits.append(await back_online(hub, refused_at))
        count = len(events.arrived())
        await wait_until(lambda: len(events.arrived()) >= count + 3, what="events after")
    missing = await events.settle()
    await watch.stop()
    shortest = min(waits)
    goal_max = RETRY_AFTER + FAULT_WEBSOCKET["reconnect_max"] + SLACK
    row = Row(
        key=f"cloud/1-retry-after-{status}",
        scenario=f"Handshake answered {status} with Retry-After: {RETRY_AFTER:.0f}",
        rule="§2: a 429 or 503 with Retry-After waits at least that long (up to the "
        "unauthorized_retry)",
        iterations=iterations,
        figure=f"next attempt {shortest:.2f} to {max(waits):.2f} s after the {status}; "
        + _events(events, missing),
        goal=f"≥ {RETRY_AFTER:.1f} s and ≤ {goal_max:.1f} s, 0 lost",
        passed=shortest >= RETRY_AFTER and max(waits) <= goal_max and not missing,
        data={"waits": waits, "lost": len(missing), "queued": len(events.accepted)},
    )
    recorder(row)
    assert shortest >= RETRY_AFTER, waits
    assert not missing and events.in_order()
    assert row.passed, row.figure


def hub_handshakes(hub: Any) -> list[Any]:
    """The Cloud's record of the hub's handshakes."""
    return list(hub.cloud.handshakes(hub.hub_id))


async def test_a_cloud_restart_closes_with_1012_and_every_hub_comes_back(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    hub = fault_hub(devcloud, tmp_path / "hub")
    daemon = await linked(daemons, hub)
    watch = await LinkWatch(daemon).start()
    iterations = sized(1, 3)
    down_for = sized(2.0, 10.0)
    detections: list[float] = []
    recoveries: list[float] = []
    async with Producer(hub) as events:
        for _ in range(iterations):
            count = len(events.arrived())
            await wait_until(lambda n=count: len(events.arrived()) >= n + 3, what="events flow")
            port = devcloud.port
            fault_at = watch.now()
            await devcloud.stop(code=1012)
            detections.append(await watch.left_connected(fault_at))
            await wait_until(lambda t0=fault_at: watch.now() - t0 >= down_for, timeout=down_for + 5)
            up_at = watch.now()
            await devcloud.start(port=port)
            recoveries.append(await back_online(hub, up_at))
        count = len(events.arrived())
        await wait_until(lambda: len(events.arrived()) >= count + 3, what="events after")
    missing = await events.settle()
    await watch.stop()
    status = daemon.status()
    assert status is not None
    # While the Cloud was away the hub kept trying with backoff, within reconnect_max.
    recover_goal = FAULT_WEBSOCKET["reconnect_max"] + SLACK
    row = Row(
        key="cloud/2-restart",
        scenario=f"Cloud restart: closes with 1012, away {down_for:.0f} s",
        rule="§2: 1012 → first attempt within the spread, then backoff ≤ reconnect_max",
        iterations=iterations,
        figure=f"detected in {max(detections):.2f} s, back {max(recoveries):.2f} s after the "
        f"Cloud was up; {status['websocket']['reconnects']} attempts; " + _events(events, missing),
        goal=f"detected ≤ {SLACK:.1f} s, back ≤ {recover_goal:.1f} s, 0 lost",
        passed=max(detections) <= SLACK and max(recoveries) <= recover_goal and not missing,
        data={
            "detections": detections,
            "recoveries": recoveries,
            "lost": len(missing),
            "queued": len(events.accepted),
        },
    )
    recorder(row)
    assert not missing and events.in_order()
    assert row.passed, row.figure
