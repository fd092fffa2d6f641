"""``hublink run`` as a process: start-up, signals, one daemon only, reloads, durability."""

from __future__ import annotations

import asyncio
import itertools
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from hublink.config import Settings, TunnelSettings
from hublink.credentials import CredentialStore
from hublink.devcloud import DevCloud
from hublink.link.messages import validate_event
from hublink.link.outbox import Outbox
from hublink.supervise import supervise
from support.daemon import TcpProxy, spawn
from support.devcloud import HubEnv, make_hub_env
from support.polling import wait_until

__all__ = ["spawn"]  # the fixture, imported for pytest


def beats(hub: HubEnv) -> list[dict[str, Any]]:
    return hub.cloud.heartbeats(hub.hub_id)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
async def test_a_signal_stops_the_daemon_cleanly_within_five_seconds(
    hub_settings: HubEnv, spawn: Callable[..., Any], signame: str
) -> None:
    import signal

    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    started = time.monotonic()
    daemon.proc.send_signal(getattr(signal, signame))
    assert await daemon.wait_exit(timeout=6) == 0
    assert time.monotonic() - started < 5
    await wait_until(lambda: cloud.close_codes(hub_settings.hub_id), what="the close")
    assert cloud.close_codes(hub_settings.hub_id) == [1001]
    assert not hub_settings.settings.control_socket.exists()


def through_slow_keepalive(hub: HubEnv, proxy: TcpProxy) -> Settings:
    """The hub's settings via ``proxy``, with a keepalive too slow to end a hung close."""
    # Only the bounded close handshake can then end the wait on shutdown.
    return hub.settings.model_copy(
        update={
            "cloud_url": proxy.url,
            "websocket": hub.settings.websocket.model_copy(
                update={"ping_interval": 30, "ping_timeout": 30}
            ),
        }
    )


async def test_sigterm_stops_within_five_seconds_even_when_the_cloud_hangs(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    proxy = await TcpProxy(hub_settings.cloud.port).start()
    try:
        daemon = await spawn(settings=through_slow_keepalive(hub_settings, proxy))
        await wait_until(lambda: beats(hub_settings), what="first heartbeat")
        proxy.blackhole()
        started = time.monotonic()
        assert await daemon.terminate(timeout=6) == 0
        assert time.monotonic() - started < 5
    finally:
        await proxy.close()


async def test_a_second_signal_forces_the_exit(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    import signal

    proxy = await TcpProxy(hub_settings.cloud.port).start()
    try:
        daemon = await spawn(settings=through_slow_keepalive(hub_settings, proxy))
        await wait_until(lambda: beats(hub_settings), what="first heartbeat")
        proxy.blackhole()  # the closing handshake now hangs until its timeout
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_until(
            lambda: any(e["event"] == "stopping" for e in daemon.log_events()),
            what="the graceful stop to begin",
        )
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = await daemon.wait_exit(timeout=6)
        assert time.monotonic() - started < 1.5
        assert code == 1
        assert any("forcing exit" in e["event"] for e in daemon.log_events())
    finally:
        await proxy.close()


async def test_run_without_credentials_waits_and_says_how_to_register(
    devcloud: DevCloud, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    # Contract section 5: `run` on an unregistered hub waits (it used to exit 78;
    # the contract wins). tests/test_daemon_registration.py has the rest.
    hub = make_hub_env(devcloud, tmp_path / "h")
    hub.settings.credentials_path.unlink()
    daemon = await spawn(hub)
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["registered"] is False
    await wait_until(lambda: "hublink register" in daemon.log_text(), what="the hint")
    assert await daemon.terminate() == 0


async def test_run_with_unreadable_credentials_exits_78_naming_the_file(
    devcloud: DevCloud, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    hub = make_hub_env(devcloud, tmp_path / "h")
    hub.settings.credentials_path.write_text("hub_id = [not toml")
    daemon = await spawn(hub)
    assert await daemon.wait_exit() == 78
    assert str(hub.settings.credentials_path) in daemon.log_text()


async def test_a_second_daemon_is_refused_and_the_first_keeps_running(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    first = await spawn()
    await first.wait_status(lambda s: s["websocket"]["state"] == "connected")
    second = await spawn()
    assert await second.wait_exit() != 0
    assert "another hublink daemon is running" in second.log_text()
    first.assert_running()
    assert first.status() is not None
    assert hub_settings.cloud.connections(hub_settings.hub_id) == 1


async def test_a_second_daemon_with_another_runtime_dir_is_refused_too(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    first = await spawn()
    await first.wait_status(lambda s: s["websocket"]["state"] == "connected")
    other = hub_settings.settings.model_copy(update={"runtime_dir": tmp_path / "run2"})
    second = await spawn(settings=other)
    assert await second.wait_exit() != 0
    assert "another hublink daemon is running" in second.log_text()
    first.assert_running()


async def test_a_stale_socket_from_a_crashed_run_is_replaced(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    path = hub_settings.settings.control_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # closed without unlink: what a kill -9 leaves behind
    assert path.exists()
    daemon = await spawn()
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["daemon"]["pid"] == daemon.pid
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


async def test_a_kill_9_leaves_a_socket_the_next_run_replaces(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    first = await spawn()
    await first.wait_status(lambda s: s["daemon"]["running"])
    await first.kill()
    assert hub_settings.settings.control_socket.exists()
    second = await spawn()
    status = await second.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert status["daemon"]["pid"] == second.pid


async def test_the_runtime_dir_is_created_when_missing(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    settings = hub_settings.settings.model_copy(
        update={"runtime_dir": tmp_path / "fresh" / "hublink"}
    )
    daemon = await spawn(settings=settings)
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert settings.control_socket.exists()
    assert await daemon.terminate() == 0
    assert not settings.control_socket.exists()


async def test_ready_comes_before_the_cloud_answers_and_status_lines_follow_the_link(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    cloud = hub_settings.cloud
    port = cloud.port
    await cloud.stop()
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except BlockingIOError:
                return messages

    try:
        daemon = await spawn(env={"NOTIFY_SOCKET": str(notify_path)})
        await wait_until(lambda: any("READY=1" in m for m in drain()), what="READY=1")
        # The Cloud is down: ready anyway, and the STATUS line tells why.
        await wait_until(
            lambda: any("STATUS=link backoff" in m for m in drain()), what="a backoff STATUS"
        )
        await cloud.start(port=port)
        await wait_until(
            lambda: any("STATUS=link connected" in m for m in drain()), what="a connected STATUS"
        )
        assert await daemon.terminate() == 0
        assert any("STOPPING=1" in m for m in drain())
    finally:
        receiver.close()


async def test_new_credentials_restart_the_link_as_the_new_hub(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    again = make_hub_env(cloud, tmp_path / "again", name="Re-registered")
    store = CredentialStore(hub_settings.settings.state_dir)
    with store.locked():
        store.save(again.creds)  # what `hublink register --force` does
    await wait_until(lambda: cloud.heartbeats(again.hub_id), what="heartbeats as the new hub")
    status = await daemon.wait_status(lambda s: s["hub_id"] == again.hub_id)
    assert status["websocket"]["state"] == "connected"
    # The old link was closed: only one hub is online.
    await wait_until(lambda: cloud.close_codes(hub_settings.hub_id), what="old link closed")
    token = again.token
    assert token not in daemon.log_text()


async def test_every_line_after_a_re_registration_carries_the_new_hub_id(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    again = make_hub_env(cloud, tmp_path / "again", name="Re-registered")
    store = CredentialStore(hub_settings.settings.state_dir)
    with store.locked():
        store.save(again.creds)
    await wait_until(lambda: cloud.heartbeats(again.hub_id), what="heartbeats as the new hub")
    # Lines from tasks that started before the change: the link's and the dispatcher's.
    reason = "left"
    await cloud.push(
        again.hub_id, {"type": "user_revoked", "user_id": "u-9", "email": "a@b.c", "reason": reason}
    )
    await daemon.wait_status(lambda s: any(u["user_id"] == "u-9" for u in s["revoked_users"]))
    events = daemon.log_events()
    changed = next(i for i, e in enumerate(events) if e.get("event") == "credentials.toml changed")
    after = [e for e in events[changed:] if "hub_id" in e]
    assert after, "no log line after the change names a hub"
    assert {e["hub_id"] for e in after} == {str(again.hub_id)}
    assert any(e.get("user_id") == "u-9" or "u-9" in str(e) for e in after)


def _queue(settings: Settings, count: int, start: int = 0) -> list[str]:
    outbox = Outbox.open(settings.state_dir, settings.outbox.max_pending)
    try:
        return [
            outbox.put(
                validate_event(
                    "plugin_installed",
                    {
                        "plugin_id": f"plugin-{n}",
                        "version": "1.0.0",
                        "installed_at": "2026-01-01T00:00:00Z",
                    },
                )
            )
            for n in range(start, start + count)
        ]
    finally:
        outbox.close()


async def test_queued_events_survive_a_kill_9_and_arrive_in_order(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    port = cloud.port
    await cloud.stop()
    ids = _queue(hub_settings.settings, 20)
    first = await spawn()
    await first.wait_status(lambda s: s["outbox"]["pending"] == 20)
    ids += _queue(hub_settings.settings, 20, start=20)  # queued while the daemon runs
    await first.kill()
    await cloud.start(port=port)
    second = await spawn()
    await wait_until(lambda: len(cloud.events(hub_settings.hub_id)) >= 40, what="all 40 events")
    received = [event["id"] for event in cloud.events(hub_settings.hub_id)]
    assert received == ids
    await second.wait_status(lambda s: s["outbox"]["pending"] == 0)


async def test_an_event_queued_by_another_process_leaves_after_a_poke(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    from hublink.control import poke

    cloud = hub_settings.cloud
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    [event_id] = _queue(hub_settings.settings, 1)
    sent_at = time.monotonic()
    assert await asyncio.to_thread(poke, hub_settings.settings.control_socket)
    await wait_until(lambda: cloud.events(hub_settings.hub_id), what="the event")
    assert time.monotonic() - sent_at < 1.0
    assert cloud.events(hub_settings.hub_id)[0]["id"] == event_id


async def test_a_disabled_tunnel_shows_as_disabled(
    devcloud: DevCloud, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    hub = make_hub_env(devcloud, tmp_path / "h", tunnel=TunnelSettings(enabled=False))
    daemon = await spawn(hub)
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["tunnel"]["state"] == "disabled"


async def test_supervise_restarts_a_crashed_task_with_its_traceback_logged() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(supervise("flaky", flaky, restart_min=0.01), timeout=5)
    assert len(runs) == 3
    crashes = [e for e in logs if e["event"] == "task crashed; restarting it"]
    assert [e["task"] for e in crashes] == ["flaky", "flaky"]
    assert all(e["log_level"] == "error" and e.get("exc_info") for e in crashes)


async def test_supervise_lets_cancellation_through() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(supervise("forever", forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_backup_request_is_backed_up_uploaded_and_answered(
    devcloud: DevCloud, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    import sqlite3

    from hublink.config import BackupSettings

    database = tmp_path / "hub.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
        conn.executemany("INSERT INTO sales (total) VALUES (?)", [(n * 1.5,) for n in range(500)])
    conn.close()
    hub = make_hub_env(devcloud, tmp_path / "h", backup=BackupSettings(database=database))
    daemon = await spawn(hub)
    await wait_until(lambda: beats(hub), what="first heartbeat")
    assert await devcloud.push(hub.hub_id, {"type": "backup_request", "requested_by": "admin@x"})

    def answers() -> list[dict[str, Any]]:
        return [e for e in devcloud.events(hub.hub_id) if e["type"].startswith("backup_")]

    await wait_until(answers, timeout=30, what="the backup answer")
    [answer] = answers()
    assert answer["type"] == "backup_completed", answer
    assert answer["requested_by"] == "admin@x"
    assert len(devcloud.backups(hub.hub_id)) == 1
    status = await daemon.wait_status(lambda s: s["last_backup"] is not None)
    assert status["last_backup"]["result"] == "completed"


async def test_the_daemon_pings_the_systemd_watchdog_from_its_loop(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)
    pings: list[float] = []

    def drain() -> int:
        while True:
            try:
                if b"WATCHDOG=1" in receiver.recv(4096):
                    pings.append(time.monotonic())
            except BlockingIOError:
                return len(pings)

    try:
        # WATCHDOG_USEC = 0.4 s: a ping every 0.2 s.
        await spawn(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
        await wait_until(lambda: drain() >= 6, what="six watchdog pings")
        gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
        # Half of WATCHDOG_USEC between pings; generous for a loaded test machine.
        assert max(gaps) < 1.0
    finally:
        receiver.close()


async def test_a_kill_9_in_the_middle_of_a_drain_loses_nothing(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    ids = _queue(hub_settings.settings, 3000)
    first = await spawn()
    await wait_until(lambda: cloud.events(hub_settings.hub_id), what="the drain to start")
    await first.kill()
    second = await spawn()
    await wait_until(lambda: len(cloud.events(hub_settings.hub_id)) >= 3000, what="every event")
    # Duplicates are allowed (the Cloud drops them by id); order and completeness are not optional.
    assert [e["id"] for e in cloud.events(hub_settings.hub_id)] == ids
    await second.wait_status(lambda s: s["outbox"]["pending"] == 0)


async def test_sigterm_while_a_hook_runs_reaps_it_and_still_exits_0_quickly(
    devcloud: DevCloud, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    import os

    pid_file = tmp_path / "hook.pid"
    hook = ["/bin/sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 60']
    hub = make_hub_env(devcloud, tmp_path / "h", hooks={"user_revoked": hook}, hooks_timeout=120)
    daemon = await spawn(hub)
    await wait_until(lambda: beats(hub), what="first heartbeat")
    await devcloud.push(hub.hub_id, {"type": "user_revoked", "user_id": "u1"})
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the hook")
    hook_pid = int(pid_file.read_text())
    started = time.monotonic()
    assert await daemon.terminate() == 0
    assert time.monotonic() - started < 5

    def gone() -> bool:
        try:
            os.kill(hook_pid, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_until(gone, timeout=5, what="the hook reaped")


async def test_an_enabled_tunnel_is_never_reported_disabled_while_starting(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    # The control socket answers as soon as startup ends; before the tunnel task
    # runs, status must already say "starting" (contract §5's vocabulary), not "disabled".
    from hublink.control import fetch_status
    from hublink.daemon import Daemon

    env = make_hub_env(
        devcloud,
        tmp_path,
        tunnel=TunnelSettings(enabled=True, frpc_path=str(tmp_path / "no-frpc")),
    )
    daemon = Daemon(env.settings)
    await daemon.startup()
    try:
        status = await fetch_status(env.settings.control_socket)
    finally:
        await daemon.shutdown()
    assert status is not None
    assert status["tunnel"]["state"] == "starting"
