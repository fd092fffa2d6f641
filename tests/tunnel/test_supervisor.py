"""The tunnel with the real frps and frpc 0.65.0: requests through it, restarts, refusals."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from hublink.devcloud import DevCloud
from hublink.devcloud.hubapp import HELLO
from hublink.live import LiveState
from hublink.logs import mask_text
from hublink.tunnel.config import config_path
from hublink.tunnel.supervisor import POLL_INTERVAL, TunnelSupervisor
from support.cloud import HubEnv
from support.polling import wait_until
from support.processes import is_alive, read_proc_file
from support.tunnel import (
    FRP_PATIENCE,
    fetch,
    fetch_eventually,
    make_tunnel_hub,
    running,
    write_fake_frpc,
)


def _supervisor(hub: HubEnv, live: LiveState, *, grace: float = 5.0) -> TunnelSupervisor:
    return TunnelSupervisor(hub.settings, hub.creds, live, grace=grace, poll_interval=0.1)


async def test_a_request_through_frps_reaches_the_hub_app(tunnel_hub: HubEnv) -> None:
    live = LiveState()
    with capture_logs() as events:
        async with running(_supervisor(tunnel_hub, live)):
            await wait_until(
                lambda: live.tunnel.state == "running", what="tunnel running", timeout=FRP_PATIENCE
            )
            body = await fetch_eventually(f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/")
            pid = live.tunnel.pid
            assert pid is not None and is_alive(pid)
            cmdline = read_proc_file(pid, "cmdline")
            environ = read_proc_file(pid, "environ")
            config = config_path(tunnel_hub.settings)
            mode = stat.S_IMODE(config.stat().st_mode)
            password = _admin_password(config)
        assert live.tunnel.state == "stopped"
        assert not is_alive(pid)
    assert body == HELLO
    assert live.tunnel.last_error is None
    assert live.tunnel.restarts == 0
    assert mode == 0o600
    token = tunnel_hub.token.encode()
    assert token not in cmdline and token not in environ
    assert password.encode() not in cmdline and password.encode() not in environ
    assert cmdline.split(b"\0")[1:3] == [b"-c", str(config).encode()]
    # frpc's own lines come through structlog at their level, with their source.
    relayed = [e for e in events if e.get("source", "").startswith("client/")]
    assert any("login to server success" in e["event"] for e in relayed)
    assert all(e.get("frpc_pid") == pid for e in relayed)
    assert {e["log_level"] for e in relayed} <= {"debug", "info", "warning", "error"}
    assert any(e.get("run_id") for e in relayed)
    # hublink's own health checks are not worth an info line every second.
    checks = [e for e in relayed if e["source"].startswith("client/admin_api.go")]
    assert checks and all(e["log_level"] == "debug" for e in checks)
    text = repr(events)
    assert tunnel_hub.token not in text and password not in text


def _admin_password(config: Path) -> str:
    import tomllib

    return str(tomllib.loads(config.read_text())["webServer"]["password"])


async def test_http_proxy_is_reached_through_the_vhost_port_by_slug(
    frp_cloud: DevCloud, hub_app: int, frp_bin: Path, tmp_path: Path
) -> None:
    hub = make_tunnel_hub(frp_cloud, tmp_path / "hub", frp_bin / "frpc", hub_app, proxy_type="http")
    assert frp_cloud.frps is not None
    live = LiveState()
    async with running(_supervisor(hub, live)):
        await wait_until(
            lambda: live.tunnel.state == "running", what="tunnel running", timeout=FRP_PATIENCE
        )
        url = f"http://127.0.0.1:{frp_cloud.frps.vhost_http_port}/"
        body = await fetch_eventually(url, host=f"{hub.creds.slug}.localhost")
        status, _ = await fetch(url, host="someone-else.localhost")
    assert body == HELLO
    assert status == 404


async def test_kill_9_of_frpc_restarts_it_and_the_tunnel_works_again(tunnel_hub: HubEnv) -> None:
    live = LiveState()
    url = f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/"
    async with running(_supervisor(tunnel_hub, live)):
        await wait_until(
            lambda: live.tunnel.state == "running", what="tunnel running", timeout=FRP_PATIENCE
        )
        first = live.tunnel.pid
        assert first is not None
        first_password = _admin_password(config_path(tunnel_hub.settings))
        os.kill(first, signal.SIGKILL)
        await wait_until(
            lambda: live.tunnel.state == "backoff",
            what="backoff after the kill",
            timeout=FRP_PATIENCE,
        )
        assert "killed by SIGKILL" in (live.tunnel.last_error or "")
        await wait_until(
            lambda: live.tunnel.state == "running" and live.tunnel.pid not in (None, first),
            what="a new frpc running",
            timeout=FRP_PATIENCE,
        )
        body = await fetch_eventually(url)
        assert live.tunnel.restarts == 1
        assert not is_alive(first)
        # A new admin password at every start; the dead one is no longer masked.
        current_password = _admin_password(config_path(tunnel_hub.settings))
        assert current_password != first_password
        assert mask_text(current_password) == "***"
        assert mask_text(first_password) == first_password
    assert body == HELLO


async def test_a_wrong_token_is_refused_by_the_plugin_with_a_clear_error(
    tunnel_hub: HubEnv,
) -> None:
    creds = tunnel_hub.creds.model_copy(update={"tunnel_token": SecretStr("not-the-token")})
    live = LiveState()
    async with running(TunnelSupervisor(tunnel_hub.settings, creds, live, poll_interval=0.1)):
        error = await wait_until(
            lambda: live.tunnel.last_error, what="a tunnel error", timeout=FRP_PATIENCE
        )
        assert live.tunnel.state == "starting"
        assert live.tunnel.pid is not None and is_alive(live.tunnel.pid)
    tunnel = tunnel_hub.settings.tunnel
    assert error == (
        f"cannot log in to frps at 127.0.0.1:{tunnel.server_port}: "
        f"wrong tunnel token for hub {creds.hub_id}"
    )


async def test_another_hubs_port_is_refused_by_the_plugin(
    frp_cloud: DevCloud, hub_app: int, frp_bin: Path, tmp_path: Path
) -> None:
    mine = make_tunnel_hub(frp_cloud, tmp_path / "a", frp_bin / "frpc", hub_app)
    theirs = make_tunnel_hub(frp_cloud, tmp_path / "b", frp_bin / "frpc", hub_app)
    assert mine.creds.tunnel_port != theirs.creds.tunnel_port
    creds = mine.creds.model_copy(update={"tunnel_port": theirs.creds.tunnel_port})
    live = LiveState()
    async with running(TunnelSupervisor(mine.settings, creds, live, poll_interval=0.1)):
        error = await wait_until(
            lambda: live.tunnel.last_error, what="a tunnel error", timeout=FRP_PATIENCE
        )
        assert live.tunnel.state == "starting"
        # Refused: frps opened nothing on the other hub's port.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", theirs.creds.tunnel_port)
    assert error == (
        f"frps refused the tunnel: remote port {theirs.creds.tunnel_port} is not hub "
        f"{mine.creds.hub_id}'s; its tunnel port is {mine.creds.tunnel_port}"
    )


@pytest.mark.parametrize("poll_interval", [0.1, POLL_INTERVAL])
async def test_frpc_reconnects_by_itself_when_frps_restarts(
    frp_cloud: DevCloud, tunnel_hub: HubEnv, poll_interval: float
) -> None:
    # With the shipped 30 s poll the drop and the return are still seen at once:
    # frpc's own log lines bring the admin API question forward.
    assert frp_cloud.frps is not None
    live = LiveState()
    seen: list[str] = []
    live.subscribe(lambda: seen.append(live.tunnel.state))
    url = f"http://127.0.0.1:{tunnel_hub.creds.tunnel_port}/"
    supervisor = TunnelSupervisor(
        tunnel_hub.settings, tunnel_hub.creds, live, poll_interval=poll_interval
    )
    async with running(supervisor):
        await wait_until(
            lambda: live.tunnel.state == "running", what="tunnel running", timeout=FRP_PATIENCE
        )
        pid = live.tunnel.pid
        await frp_cloud.frps.stop()
        await wait_until(
            lambda: live.tunnel.state == "starting", what="the drop noticed", timeout=FRP_PATIENCE
        )
        # frpc may first report the dropped session; while frps stays down its
        # next login attempts are refused, and that is what status must say.
        down = await wait_until(
            lambda: (
                "connection refused" in (live.tunnel.last_error or "") and live.tunnel.last_error
            ),
            what="the refused login reported",
            timeout=FRP_PATIENCE,
        )
        await frp_cloud.frps.start()
        await wait_until(
            lambda: live.tunnel.state == "running", what="running again", timeout=FRP_PATIENCE
        )
        body = await fetch_eventually(url)
        assert live.tunnel.pid == pid  # the same frpc, reconnected
    assert body == HELLO
    assert live.tunnel.restarts == 0
    assert down.startswith(f"cannot log in to frps at 127.0.0.1:{frp_cloud.frps.bind_port}: ")
    assert live.tunnel.last_error is None  # cleared once running again
    transitions = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert transitions[:3] == ["starting", "running", "starting"]
    assert transitions[3] == "running"


def _fake_hub(tunnel_hub: HubEnv, frpc: Path | str, **tunnel: float) -> HubEnv:
    settings = tunnel_hub.settings.model_copy(
        update={
            "tunnel": tunnel_hub.settings.tunnel.model_copy(
                update={"frpc_path": str(frpc), **tunnel}
            )
        }
    )
    return HubEnv(settings=settings, creds=tunnel_hub.creds, cloud=tunnel_hub.cloud)


async def test_missing_frpc_fails_with_an_install_hint_and_is_retried(
    tunnel_hub: HubEnv, frp_bin: Path, tmp_path: Path
) -> None:
    frpc = tmp_path / "bin" / "frpc"
    hub = _fake_hub(tunnel_hub, frpc)
    live = LiveState()
    async with running(_supervisor(hub, live)):
        await wait_until(lambda: live.tunnel.state == "failed", what="failed", timeout=FRP_PATIENCE)
        assert live.tunnel.pid is None
        error = live.tunnel.last_error or ""
        # Installed while hublink runs: picked up at the next retry (restart_max).
        frpc.parent.mkdir()
        frpc.symlink_to(frp_bin / "frpc")
        await wait_until(
            lambda: live.tunnel.state == "running",
            what="running once installed",
            timeout=FRP_PATIENCE,
        )
    assert f"frpc not found or not executable: {frpc}" in error
    assert "install frp 0.52 or later" in error and "tunnel.frpc_path" in error


async def test_a_non_executable_frpc_fails_too(tunnel_hub: HubEnv, tmp_path: Path) -> None:
    frpc = tmp_path / "frpc"
    frpc.write_text("not a program")
    live = LiveState()
    async with running(_supervisor(_fake_hub(tunnel_hub, frpc), live)):
        await wait_until(lambda: live.tunnel.state == "failed", what="failed", timeout=FRP_PATIENCE)
    assert "install frp" in (live.tunnel.last_error or "")


async def test_a_crash_loop_is_spaced_by_the_backoff_and_counted(
    tunnel_hub: HubEnv, tmp_path: Path
) -> None:
    frpc = write_fake_frpc(tmp_path, "#!/bin/sh\necho '[E] [fake/main.go:1] bad config'\nexit 3\n")
    hub = _fake_hub(tunnel_hub, frpc, restart_min=0.2, restart_max=0.8)
    live = LiveState()
    starts: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()

    def record() -> None:
        pid = live.tunnel.pid
        if live.tunnel.state == "starting" and pid and (not starts or starts[-1][1] != pid):
            starts.append((loop.time(), pid))

    live.subscribe(record)
    async with running(_supervisor(hub, live)):
        await wait_until(lambda: len(starts) >= 5, what="five starts", timeout=FRP_PATIENCE)
        restarts = live.tunnel.restarts
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.2 * 0.95  # never faster than restart_min
    assert max(gaps) <= 0.8 + 0.5  # capped near restart_max (plus scheduling)
    # Growing: the fourth wait is drawn from [0.4, 0.8] (twice restart_min and up),
    # whatever scheduling added to the first.
    assert gaps[3] >= 0.4 * 0.95
    assert restarts >= 4
    assert live.tunnel.last_error is not None
    assert live.tunnel.last_error.endswith("exited with code 3; last error: bad config")


async def test_an_frpc_ignoring_sigterm_is_killed_after_the_grace_period(
    tunnel_hub: HubEnv, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    frpc = write_fake_frpc(
        tmp_path,
        f"""#!{sys.executable}
import pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path({str(ready)!r}).write_text("x")
time.sleep(60)
""",
    )
    live = LiveState()
    loop = asyncio.get_running_loop()
    with capture_logs() as events:
        async with running(_supervisor(_fake_hub(tunnel_hub, frpc), live, grace=0.5)):
            await wait_until(
                ready.exists, what="the fake frpc ignoring SIGTERM", timeout=FRP_PATIENCE
            )
            pid = live.tunnel.pid
            assert pid is not None
            stopping = loop.time()
        took = loop.time() - stopping
    assert not is_alive(pid)
    assert 0.5 <= took < 3.0
    assert live.tunnel.state == "stopped"
    kinds = [(e["event"], e.get("pid")) for e in events]
    assert ("frpc ignored SIGTERM; killing it", pid) in kinds
    assert ("frpc killed", pid) in kinds


HEALTHY_FOR_A_WHILE = """#!{python}
# Reports a running proxy on the admin API for 0.5 s, then crashes.
import http.server, json, sys, threading, time, tomllib
config = tomllib.load(open(sys.argv[2], "rb"))
class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"tcp": [{{"name": config["user"] + ".hub", "status": "running"}}]}})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", config["webServer"]["port"]), Status)
threading.Thread(target=server.serve_forever, daemon=True).start()
time.sleep(0.5)
sys.exit(1)
"""


@pytest.mark.parametrize("healthy_reset", [0.3, 60.0])
async def test_the_backoff_resets_after_a_healthy_run(
    tunnel_hub: HubEnv, tmp_path: Path, healthy_reset: float
) -> None:
    frpc = write_fake_frpc(tmp_path, HEALTHY_FOR_A_WHILE.format(python=sys.executable))
    hub = _fake_hub(tunnel_hub, frpc, restart_min=0.2, restart_max=5.0)
    live = LiveState()
    loop = asyncio.get_running_loop()
    marks: list[tuple[str, float]] = []

    def record() -> None:
        state = live.tunnel.state
        if not marks or marks[-1][0] != state:
            marks.append((state, loop.time()))

    live.subscribe(record)
    supervisor = TunnelSupervisor(
        hub.settings, hub.creds, live, poll_interval=0.05, healthy_reset=healthy_reset
    )
    async with running(supervisor):
        await wait_until(
            lambda: live.tunnel.restarts >= 3, what="three restarts", timeout=FRP_PATIENCE
        )
    assert [s for s, _ in marks].count("running") >= 3  # each run was healthy for a while
    waits = [
        later - at
        for (state, at), (after, later) in itertools.pairwise(marks)
        if state == "backoff" and after == "starting"
    ]
    if healthy_reset < 0.5:
        assert all(w < 0.2 * 1.9 for w in waits[:3]), waits  # back to restart_min each time
    else:
        assert waits[2] >= 0.4 * 0.95, waits  # 0.2, then up to 0.4, then 0.4-0.8


async def test_an_unwritable_state_dir_fails_with_a_clear_error(
    tunnel_hub: HubEnv, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = tunnel_hub.settings.model_copy(update={"state_dir": blocker / "state"})
    live = LiveState()
    async with running(TunnelSupervisor(settings, tunnel_hub.creds, live)):
        await wait_until(lambda: live.tunnel.state == "failed", what="failed", timeout=FRP_PATIENCE)
    assert (live.tunnel.last_error or "").startswith("cannot write the frpc config: ")
    assert "writable by hublink" in (live.tunnel.last_error or "")


async def test_a_busy_admin_port_is_named_in_the_error(tunnel_hub: HubEnv) -> None:
    port = tunnel_hub.settings.tunnel.admin_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        live = LiveState()
        async with running(_supervisor(tunnel_hub, live)):
            await wait_until(
                lambda: live.tunnel.state == "backoff", what="frpc gave up", timeout=FRP_PATIENCE
            )
    assert (live.tunnel.last_error or "").endswith(
        f"exited with code 1; last error: tunnel.admin_port {port} is already in use "
        "on 127.0.0.1; set tunnel.admin_port to a free port"
    )
