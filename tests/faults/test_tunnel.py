"""The tunnel under faults: real frps (beside the reference Cloud) and real frpc.

Contract section 3 and the unit: hublink keeps exactly one frpc alive, restarts
it with backoff when it dies, rides out an frps outage (``loginFailExit =
false``), and never leaves an frpc behind, not even when hublink itself is
killed. The WebSocket link is not disturbed by any of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from hublink.devcloud.hubapp import HELLO
from support.cloud import HubEnv
from support.daemon import Daemons, HublinkProcess
from support.polling import wait_until
from support.processes import is_alive as alive
from support.reliability import Row
from support.scenario import SLACK, sized
from support.tunnel import FAST_RESTART, fetch_eventually

pytestmark = [pytest.mark.faults, pytest.mark.frp, pytest.mark.timeout(sized(120, 600))]

#: How long frps stays down: CI's short form 5 s, `make faults` a minute, or
#: HUBLINK_FAULTS_FRPS_DOWN (read at import: the tests' fixture clears HUBLINK_*).
FRPS_DOWN = float(os.environ.get("HUBLINK_FAULTS_FRPS_DOWN") or sized(5.0, 60.0))
#: frpc (loginFailExit = false) retries its login on its own schedule, backing off to
#: one try every 20 s (frp 0.65: its log says "try to connect to server..." that often).
FRPC_LOGIN_RETRY_MAX = 20.0
#: frpc's own start: spawn, log in to frps, open the proxy (seconds, measured ~1 s).
FRPC_START = 3.0


async def _tunnel_up(daemon: HublinkProcess, hub: HubEnv, old_pid: int | None = None) -> int:
    """Wait until a new frpc runs and serves the Hub app through frps; its pid."""
    status = await daemon.wait_status(
        lambda s: s["tunnel"]["state"] == "running" and s["tunnel"]["pid"] != old_pid, timeout=60
    )
    body = await fetch_eventually(f"http://127.0.0.1:{hub.creds.tunnel_port}/", timeout=60)
    assert body == HELLO
    return int(status["tunnel"]["pid"])


def _link_drops(hub: HubEnv) -> int:
    return hub.cloud.connections(hub.hub_id) - 1


async def test_frpc_killed_again_and_again_is_restarted_every_time(
    tunnel_hub: HubEnv, daemons: Daemons, recorder: Any
) -> None:
    daemon = await daemons.start(tunnel_hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
    pid = await _tunnel_up(daemon, tunnel_hub)
    kills = sized(5, 20)
    detections: list[float] = []
    recoveries: list[float] = []
    for _ in range(kills):
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await daemon.wait_status(
            lambda s, old=pid: s["tunnel"]["state"] != "running" or s["tunnel"]["pid"] != old
        )
        detections.append(time.monotonic() - killed_at)
        new_pid = await _tunnel_up(daemon, tunnel_hub, old_pid=pid)
        recoveries.append(time.monotonic() - killed_at)
        await wait_until(lambda old=pid: not alive(old), what="the killed frpc reaped")
        pid = new_pid
    status = daemon.status()
    assert status is not None
    drops = _link_drops(tunnel_hub)
    goal = FAST_RESTART["restart_max"] + FRPC_START + SLACK
    row = Row(
        key="tunnel/1-frpc-killed",
        scenario=f"frpc killed (SIGKILL) {kills} times",
        rule="§3: exactly one frpc, restarted with backoff (tunnel.restart_min/max); "
        "the link undisturbed",
        iterations=kills,
        figure=f"noticed in ≤ {max(detections):.2f} s, serving again in ≤ {max(recoveries):.2f} s "
        f"(median {sorted(recoveries)[len(recoveries) // 2]:.2f} s); "
        f"{status['tunnel']['restarts']} restarts counted; {drops} link drops",
        goal=f"serving again ≤ {goal:.1f} s every time, restarts = kills, 0 link drops",
        passed=max(recoveries) <= goal and status["tunnel"]["restarts"] >= kills and drops == 0,
        data={"detections": detections, "recoveries": recoveries},
    )
    recorder(row)
    assert status["tunnel"]["restarts"] >= kills
    assert drops == 0
    assert row.passed, row.figure


async def test_frps_down_for_a_while_then_the_tunnel_comes_back_by_itself(
    tunnel_hub: HubEnv, daemons: Daemons, recorder: Any
) -> None:
    frps = tunnel_hub.cloud.frps
    assert frps is not None
    daemon = await daemons.start(tunnel_hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
    await _tunnel_up(daemon, tunnel_hub)
    down_for = FRPS_DOWN
    down_at = time.monotonic()
    await frps.stop()
    await daemon.wait_status(lambda s: s["tunnel"]["state"] != "running", timeout=30)
    detected = time.monotonic() - down_at
    await wait_until(lambda: time.monotonic() - down_at >= down_for, timeout=down_for + 5)
    during = daemon.status()
    assert during is not None
    up_at = time.monotonic()
    await frps.start()
    await _tunnel_up(daemon, tunnel_hub, old_pid=None)
    recovered = time.monotonic() - up_at
    drops = _link_drops(tunnel_hub)
    # frpc retries its login on its own schedule: after a long outage, up to 20 s apart.
    goal = FRPC_LOGIN_RETRY_MAX + FRPC_START + SLACK
    row = Row(
        key="tunnel/2-frps-down",
        scenario=f"frps down for {down_for:.0f} s",
        rule="§3: loginFailExit = false, the supervisor reports the tunnel down and brings it "
        "back without help",
        iterations=1,
        figure=f"noticed in {detected:.2f} s (state {during['tunnel']['state']!r}: "
        f"{(during['tunnel']['last_error'] or 'no error')[:80]}), serving "
        f"{recovered:.2f} s after frps returned; {drops} link drops",
        goal=f"noticed, serving again ≤ {goal:.0f} s (frpc retries its login every 20 s at "
        "most), 0 link drops",
        passed=recovered <= goal and drops == 0,
        data={
            "detect_s": detected,
            "recover_s": recovered,
            "during": during["tunnel"],
        },
    )
    recorder(row)
    assert drops == 0
    assert row.passed, row.figure


async def test_the_daemon_killed_leaves_no_frpc_and_a_restart_works(
    tunnel_hub: HubEnv, daemons: Daemons, recorder: Any
) -> None:
    iterations = sized(1, 5)
    orphans = 0
    restarts: list[float] = []
    orphan_waits: list[float] = []
    for _ in range(iterations):
        daemon = await daemons.start(tunnel_hub)
        await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
        pid = await _tunnel_up(daemon, tunnel_hub)
        killed_at = time.monotonic()
        await daemon.kill()
        # PR_SET_PDEATHSIG: the kernel ends frpc with its parent.
        try:
            await wait_until(lambda old=pid: not alive(old), timeout=5, what="frpc gone")
        except TimeoutError:
            orphans += 1
            os.kill(pid, signal.SIGKILL)
        orphan_waits.append(time.monotonic() - killed_at)
        started = time.monotonic()
        again = await daemons.start(tunnel_hub)
        await again.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
        await _tunnel_up(again, tunnel_hub)
        restarts.append(time.monotonic() - started)
        assert await again.terminate() == 0
        await asyncio.sleep(0)
    row = Row(
        key="tunnel/3-daemon-killed",
        scenario="hublink killed (SIGKILL) with frpc running",
        rule="§3 / the unit: frpc never outlives hublink (PDEATHSIG); a restart takes the lock, "
        "the socket and the tunnel again",
        iterations=iterations,
        figure=f"{orphans} frpc left behind (gone ≤ {max(orphan_waits):.2f} s after the kill); "
        f"the next daemon linked and served the tunnel in ≤ {max(restarts):.1f} s",
        goal="0 frpc left behind, the restart links and tunnels",
        passed=orphans == 0,
        data={"orphan_waits": orphan_waits, "restarts": restarts},
    )
    recorder(row)
    assert orphans == 0
