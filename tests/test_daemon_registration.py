"""``hublink run`` without credentials waits (contract section 5); credentials that come and
go while it runs start and stop the link and the tunnel without a restart (issue 10, item 15).

Every daemon is a real ``hublink run`` subprocess against the reference Cloud.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import aiohttp
import pytest

from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from support.cli import make_child_env, run_hublink
from support.cloud import HubEnv
from support.daemon import Daemons, HublinkProcess
from support.hubs import connected, unregistered_hub
from support.polling import wait_until
from support.processes import is_alive
from support.systemd import FakeSystemd
from support.tunnel import frp_cloud, hub_app, tunnel_hub

__all__ = ["frp_cloud", "hub_app", "tunnel_hub"]  # fixtures, imported for pytest


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    with tempfile.TemporaryDirectory(prefix="hl-") as folder:  # AF_UNIX paths are short
        fake = FakeSystemd(str(Path(folder) / "notify"))
        try:
            yield fake
        finally:
            fake.close()


async def beside(daemon: HublinkProcess, *args: str, stdin: str = "") -> CompletedProcess[str]:
    """``hublink ARGS`` in another shell of the same box: the daemon's settings."""
    env = make_child_env(daemon.settings)
    return await asyncio.to_thread(run_hublink, *args, env=env, stdin=stdin)


async def register_in_another_shell(daemon: HublinkProcess, *extra: str) -> str:
    """``hublink register`` run beside the daemon; the new hub's id."""
    run = await beside(
        daemon,
        "register",
        "--email",
        DEMO_EMAIL,
        "--password-stdin",
        *extra,
        stdin=DEMO_PASSWORD + "\n",
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.split("hub id ")[1].split(",")[0]


async def test_an_unregistered_daemon_waits_serving_the_control_api_and_the_page(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, systemd: FakeSystemd
) -> None:
    hub = unregistered_hub(devcloud, tmp_path)
    daemon = await daemons.start(hub, env={"NOTIFY_SOCKET": systemd.address})

    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["registered"] is False
    assert status["hub_id"] is None
    assert status["websocket"]["state"] == "stopped"
    await wait_until(
        lambda: {"READY=1", "STATUS=waiting for registration"} <= set(systemd.received.texts()),
        what="READY=1 and the waiting status",
    )
    # The page is up: locked, it shows the code form.
    url = status["web"]["url"]
    assert url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.get(url) as page:
        assert page.status == 200
        assert 'name="code"' in await page.text()
    # Still waiting, not exiting: nothing to restart under systemd.
    daemon.assert_running()
    assert not devcloud.hubs() or all(not h.connected for h in devcloud.hubs())


async def test_hublink_register_in_another_shell_starts_the_link_without_a_restart(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, systemd: FakeSystemd
) -> None:
    hub = unregistered_hub(devcloud, tmp_path)
    daemon = await daemons.start(hub, env={"NOTIFY_SOCKET": systemd.address})
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    pid = daemon.pid

    hub_id = await register_in_another_shell(daemon, "--name", "Back Office")

    # At once, not at the watcher's next poll: the daemon re-reads the file to answer.
    run = await beside(daemon, "status", "--json")
    assert json.loads(run.stdout)["hub_id"] == hub_id
    status = await daemon.wait_status(connected)
    assert status["hub_id"] == hub_id
    assert status["name"] == "Back Office"
    assert status["daemon"]["pid"] == pid
    await wait_until(lambda: devcloud.heartbeats(hub_id), what="heartbeats of the new hub")
    await wait_until(
        lambda: any(t.startswith("STATUS=link connected") for t in systemd.received.texts()),
        what="systemd's status line to move on",
    )


async def test_unregister_while_running_drops_link_and_tunnel_and_waits_for_a_registration(
    tunnel_hub: HubEnv, daemons: Daemons
) -> None:
    cloud = tunnel_hub.cloud
    daemon = await daemons.start(tunnel_hub)
    up = await daemon.wait_status(
        lambda s: connected(s) and s["tunnel"]["state"] == "running", timeout=30
    )
    frpc = up["tunnel"]["pid"]

    run = await beside(daemon, "unregister", "--yes")
    assert run.returncode == 0, run.stderr

    status = await daemon.wait_status(lambda s: not s["registered"], timeout=10)
    assert status["hub_id"] is None
    await daemon.wait_status(
        lambda s: s["websocket"]["state"] == "stopped" and s["tunnel"]["state"] == "stopped"
    )
    await wait_until(lambda: not cloud.hub(tunnel_hub.hub_id).connected, what="link closed")
    await wait_until(lambda: not is_alive(frpc), what="frpc to end")
    run = await beside(daemon, "status")
    assert "registered: no" in run.stdout

    # A new registration, this time through the control API, brings both back.
    answer = await daemon.call(
        "POST", "/v1/register", {"email": DEMO_EMAIL, "password": DEMO_PASSWORD, "name": "Again"}
    )
    assert answer[0] == 201, answer
    new_id = answer[1]["hub_id"]
    assert uuid.UUID(new_id) and new_id != tunnel_hub.hub_id
    back = await daemon.wait_status(
        lambda s: connected(s) and s["tunnel"]["state"] == "running", timeout=30
    )
    assert back["hub_id"] == new_id
    assert back["daemon"]["pid"] == daemon.pid
    assert not cloud.hub(tunnel_hub.hub_id).connected


async def test_credentials_written_while_waiting_are_used_even_when_the_page_is_off(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = unregistered_hub(devcloud, tmp_path)
    daemon = await daemons.start(hub, env={"HUBLINK_WEB__ENABLED": "false"})
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["web"] == {
        "enabled": False,
        "listen": "127.0.0.1:0",
        "url": None,
        "error": None,
    }
    # As a provisioning script would: the credentials file appears whole.
    creds = devcloud.enroll_into(hub.settings.state_dir, name="Provisioned")
    status = await daemon.wait_status(connected)
    assert status["hub_id"] == str(creds.hub_id)
    assert status["name"] == "Provisioned"


async def test_a_listen_address_in_use_is_named_and_the_daemon_links_and_registers_anyway(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = unregistered_hub(devcloud, tmp_path)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        daemon = await daemons.start(hub, env={"HUBLINK_WEB__LISTEN": f"127.0.0.1:{port}"})
        status = await daemon.wait_status(lambda s: s["daemon"]["running"])
        web = status["web"]
        assert web["url"] is None
        assert f"127.0.0.1:{port}" in web["error"] and "in use" in web["error"]
        assert any(
            e.get("level") == "error" and f"127.0.0.1:{port}" in str(e.get("error"))
            for e in daemon.log_events()
        )
        run = await beside(daemon, "status")
        assert f"page:       not served: the page cannot listen on 127.0.0.1:{port}" in run.stdout
        doctor = await daemon.call("GET", "/v1/doctor")
        page = next(c for c in doctor[1]["checks"] if c["name"] == "page")
        assert page["status"] == "fail" and "in use" in page["detail"]

        # The control API still serves registration, and the link comes up.
        answer = await daemon.call(
            "POST", "/v1/register", {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        )
        assert answer[0] == 201, answer
        await daemon.wait_status(connected)
    finally:
        server.close()
        await server.wait_closed()
