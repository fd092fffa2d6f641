"""Contract section 3, the FRP tunnel: ``hublink run`` with real frpc, against the real frps
(with the Cloud's per-hub plugin) of the reference Cloud.

What it proves: the daemon runs frpc on the generated config and a request to
the hub's ``tunnel_port`` on frps reaches the Hub application; frpc is reaped
when the daemon stops, and dies with it even after a kill -9; new credentials
restart the tunnel as the new hub; its metrics follow frpc (up, restarts,
section 10); the tunnel stops while the Cloud refuses
the hub's credentials and comes back once they are accepted; the token never
reaches the daemon's log.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from hublink.credentials import CredentialStore
from hublink.devcloud.hubapp import HELLO
from support.cloud import HubEnv, make_hub_env
from support.daemon import Daemons, HublinkProcess
from support.metrics import scrape_socket
from support.polling import wait_until
from support.processes import is_alive
from support.tunnel import fetch_eventually

pytestmark = pytest.mark.frp


async def test_the_daemon_runs_frpc_and_reaps_it_on_sigterm(
    tunnel_hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await daemons.start(tunnel_hub)
    status = await daemon.wait_status(
        lambda s: s["tunnel"]["state"] == "running" and s["websocket"]["state"] == "connected",
        timeout=30,
    )
    frpc_pid = status["tunnel"]["pid"]
    assert frpc_pid and is_alive(frpc_pid)
    body = await fetch_eventually(f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/")
    assert body == HELLO
    started = time.monotonic()
    assert await daemon.terminate() == 0
    assert time.monotonic() - started < 5
    assert not is_alive(frpc_pid)
    assert tunnel_hub.token not in daemon.log_text()


async def test_new_credentials_restart_the_tunnel_too(
    tunnel_hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    daemon = await daemons.start(tunnel_hub)
    first = await daemon.wait_status(lambda s: s["tunnel"]["state"] == "running", timeout=30)
    old_pid = first["tunnel"]["pid"]
    again = make_hub_env(tunnel_hub.cloud, tmp_path / "again", name="Again")
    store = CredentialStore(tunnel_hub.settings.state_dir)
    with store.locked():
        store.save(again.creds)
    status = await daemon.wait_status(
        lambda s: (
            s["hub_id"] == again.hub_id
            and s["tunnel"]["state"] == "running"
            and s["tunnel"]["pid"] != old_pid
        ),
        timeout=30,
    )
    await wait_until(lambda: not is_alive(old_pid), what="the old frpc reaped")
    body = await fetch_eventually(f"http://127.0.0.1:{again.creds.tunnel_port}/")
    assert body == HELLO
    assert status["websocket"]["state"] in ("connected", "connecting", "backoff")


async def test_tunnel_up_and_restarts_in_the_metrics_follow_frpc(
    tunnel_hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await daemons.start(tunnel_hub)
    first = await daemon.wait_status(lambda s: s["tunnel"]["state"] == "running", timeout=30)
    sock = tunnel_hub.settings.control_socket

    def tunnel(up: float, restarts: float) -> bool:
        scrape = scrape_socket(sock)
        return (
            scrape is not None
            and scrape.value("hublink_tunnel_up") == up
            and scrape.value("hublink_tunnel_restarts_total") == restarts
        )

    await wait_until(lambda: tunnel(1, 0), what="tunnel_up 1, no restart")
    os.kill(first["tunnel"]["pid"], signal.SIGKILL)
    await daemon.wait_status(
        lambda s: s["tunnel"]["state"] == "running" and s["tunnel"]["restarts"] == 1, timeout=30
    )
    await wait_until(lambda: tunnel(1, 1), what="tunnel_up 1 again, one restart")


async def test_the_tunnel_stops_while_the_cloud_refuses_the_hub_and_comes_back_after(
    tunnel_hub: HubEnv, daemons: Daemons
) -> None:
    # Issue 10 item 17: a revoked hub kept serving the Hub application through frps.
    cloud = tunnel_hub.cloud
    daemon = await daemons.start(tunnel_hub)
    first = await daemon.wait_status(
        lambda s: s["tunnel"]["state"] == "running" and s["websocket"]["state"] == "connected",
        timeout=30,
    )
    old_pid = first["tunnel"]["pid"]
    # The Cloud refuses the credentials (4003), then the next handshakes (403).
    cloud.fail_next("/ws/hub/", 403, count=4)
    await cloud.close_hub(tunnel_hub.hub_id, 4003, "hub revoked")
    held = await daemon.wait_status(
        lambda s: s["websocket"]["state"] == "unauthorized" and s["tunnel"]["state"] == "stopped",
        timeout=30,
    )
    assert held["tunnel"]["pid"] is None
    assert "refuses this hub's credentials" in held["tunnel"]["last_error"]
    await wait_until(lambda: not is_alive(old_pid), what="frpc stopped")
    # Accepted again: the tunnel starts anew and serves the Hub application.
    back = await daemon.wait_status(
        lambda s: s["websocket"]["state"] == "connected" and s["tunnel"]["state"] == "running",
        timeout=30,
    )
    assert back["tunnel"]["pid"] not in (None, old_pid)
    body = await fetch_eventually(f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/")
    assert body == HELLO


async def test_kill_9_of_the_daemon_leaves_no_frpc_behind(tunnel_hub: HubEnv) -> None:
    tunnel = tunnel_hub.settings.tunnel
    env = {
        "HUBLINK_TUNNEL__FRPC_PATH": tunnel.frpc_path,
        "HUBLINK_TUNNEL__SERVER_ADDR": "127.0.0.1",
        "HUBLINK_TUNNEL__SERVER_PORT": str(tunnel.server_port),
        "HUBLINK_TUNNEL__ADMIN_PORT": str(tunnel.admin_port),
        "HUBLINK_HUB__LOCAL_PORT": str(tunnel_hub.settings.hub.local_port),
    }
    daemon = HublinkProcess(tunnel_hub, env=env)
    await daemon.start()
    try:
        status = await daemon.wait_status(
            lambda s: (s.get("tunnel") or {}).get("state") == "running", timeout=30
        )
        body = await fetch_eventually(f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/")
        frpc_pid = status["tunnel"]["pid"]
        assert is_alive(frpc_pid)
        await daemon.kill()
        await wait_until(
            lambda: not is_alive(frpc_pid), timeout=10, what="frpc gone with the daemon"
        )
    finally:
        await daemon.stop()  # also checks that the token never reached the daemon's log
    assert body == HELLO
