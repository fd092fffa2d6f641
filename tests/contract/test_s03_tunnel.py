"""``hublink run`` with the tunnel: real frps (in the reference Cloud) and real frpc."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hublink.credentials import CredentialStore
from support.daemon import spawn
from support.devcloud import HubEnv
from support.polling import wait_until
from support.tunnel import HELLO, fetch_eventually, frp_cloud, hub_app, tunnel_hub

__all__ = ["frp_cloud", "hub_app", "spawn", "tunnel_hub"]  # fixtures, imported for pytest

pytestmark = pytest.mark.frp


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_daemon_runs_frpc_and_reaps_it_on_sigterm(
    tunnel_hub: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn(tunnel_hub)
    status = await daemon.wait_status(
        lambda s: s["tunnel"]["state"] == "running" and s["websocket"]["state"] == "connected",
        timeout=30,
    )
    frpc_pid = status["tunnel"]["pid"]
    assert frpc_pid and alive(frpc_pid)
    body = await fetch_eventually(f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/")
    assert body == HELLO
    started = time.monotonic()
    assert await daemon.terminate() == 0
    assert time.monotonic() - started < 5
    assert not alive(frpc_pid)
    assert tunnel_hub.token not in daemon.log_text()


async def test_new_credentials_restart_the_tunnel_too(
    tunnel_hub: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    from support.devcloud import make_hub_env

    daemon = await spawn(tunnel_hub)
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
    await wait_until(lambda: not alive(old_pid), what="the old frpc reaped")
    body = await fetch_eventually(f"http://127.0.0.1:{again.creds.tunnel_port}/")
    assert body == HELLO
    assert status["websocket"]["state"] in ("connected", "connecting", "backoff")
