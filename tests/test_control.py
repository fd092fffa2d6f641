"""The control API over the unix socket, against a real daemon."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hublink.control import fetch_status, poke, request
from support.daemon import spawn
from support.devcloud import HubEnv
from support.polling import wait_until

__all__ = ["spawn"]  # the fixture, imported for pytest

CONTRACT_KEYS = {
    "registered",
    "hub_id",
    "slug",
    "cloud_url",
    "daemon",
    "websocket",
    "tunnel",
    "outbox",
    "plugin_updates",
    "revoked_users",
}

PLUGIN_INSTALLED = {
    "plugin_id": "inventory",
    "version": "1.2.0",
    "installed_at": "2026-01-28T09:00:00Z",
}


async def call(hub: HubEnv, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    answer = await asyncio.to_thread(request, hub.settings.control_socket, method, url, body)
    assert answer is not None, "the daemon did not answer"
    return answer


async def test_status_is_the_contract_object(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn()
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert set(status) >= CONTRACT_KEYS
    assert status["registered"] is True
    assert status["hub_id"] == hub_settings.hub_id
    assert status["slug"] == hub_settings.creds.slug
    assert status["cloud_url"] == hub_settings.cloud.url
    assert status["daemon"] == {"running": True, "pid": daemon.pid}
    assert set(status["websocket"]) == {
        "state",
        "last_heartbeat_at",
        "reconnects",
        "last_error",
        "next_attempt_at",
    }
    assert status["websocket"]["reconnects"] == 0
    assert set(status["tunnel"]) >= {"state", "pid", "restarts", "last_error"}
    assert status["outbox"] == {"pending": 0}
    assert status["plugin_updates"] == []
    assert status["revoked_users"] == []
    assert await fetch_status(hub_settings.settings.control_socket) is not None


async def test_debug_counts_the_daemons_tasks_and_threads(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    status, body = await call(hub_settings, "GET", "/v1/debug")
    assert status == 200
    # The supervised tasks, the link's loops and this very request, at least.
    assert body["tasks"] >= 5
    assert body["threads"] >= 1


async def test_the_socket_is_0660_and_removed_on_exit(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    path = hub_settings.settings.control_socket
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert await daemon.terminate() == 0
    assert not path.exists()


async def test_posted_events_are_queued_and_delivered_with_their_id(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    code, body = await call(
        hub_settings, "POST", "/v1/events", {"type": "plugin_installed", "data": PLUGIN_INSTALLED}
    )
    assert code == 201
    event_id = body["id"]
    await wait_until(lambda: cloud.events(hub_settings.hub_id), what="the event at the Cloud")
    [event] = cloud.events(hub_settings.hub_id)
    assert event["id"] == event_id
    assert event["type"] == "plugin_installed"
    assert event["plugin_id"] == "inventory"
    await daemon.wait_status(lambda s: s["outbox"]["pending"] == 0)


async def test_events_posted_while_the_cloud_is_down_wait_in_the_outbox(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    port = cloud.port
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    await cloud.stop()
    ids = []
    for n in range(3):
        data = {**PLUGIN_INSTALLED, "plugin_id": f"p{n}"}
        code, body = await call(
            hub_settings, "POST", "/v1/events", {"type": "plugin_installed", "data": data}
        )
        assert code == 201
        ids.append(body["id"])
    await daemon.wait_status(lambda s: s["outbox"]["pending"] == 3)
    await cloud.start(port=port)
    await wait_until(lambda: len(cloud.events(hub_settings.hub_id)) >= 3, what="3 events")
    assert [e["id"] for e in cloud.events(hub_settings.hub_id)] == ids


async def test_invalid_events_get_422_with_the_problems(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    code, body = await call(
        hub_settings, "POST", "/v1/events", {"type": "plugin_installed", "data": {"version": 3}}
    )
    assert code == 422
    assert any("plugin_id" in problem for problem in body["problems"])
    code, body = await call(hub_settings, "POST", "/v1/events", {"type": "heartbeat", "data": {}})
    assert code == 422
    code, body = await call(hub_settings, "POST", "/v1/events", {"data": {}})
    assert code == 422
    code, body = await call(
        hub_settings, "POST", "/v1/events", {"type": "user_sync", "data": "nope"}
    )
    assert code == 422
    status = daemon.status()
    assert status is not None
    assert status["outbox"]["pending"] == 0


async def test_a_body_that_is_not_json_gets_400(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    import http.client
    import socket

    daemon = await spawn()
    await daemon.wait_status(lambda s: s["daemon"]["running"])

    def raw() -> int:
        conn = http.client.HTTPConnection("hublink")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.connect(str(hub_settings.settings.control_socket))
        conn.request("POST", "/v1/events", body=b"{not json", headers={"Content-Length": "9"})
        status = conn.getresponse().status
        conn.close()
        return status

    assert await asyncio.to_thread(raw) == 400


async def test_poke_answers_true_with_a_daemon(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert await asyncio.to_thread(poke, hub_settings.settings.control_socket)


async def test_the_client_treats_no_daemon_as_an_answer(tmp_path: Path) -> None:
    missing = tmp_path / "run" / "control.sock"
    assert await fetch_status(missing) is None
    assert poke(missing) is False
    # A socket file nobody listens on (a crashed daemon's) is no daemon either.
    import socket

    missing.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(missing))
    assert await fetch_status(missing) is None
    assert poke(missing) is False


async def test_a_full_outbox_refuses_with_503_and_a_clear_error(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    from hublink.config import OutboxSettings

    await hub_settings.cloud.stop()  # nothing drains
    settings = hub_settings.settings.model_copy(update={"outbox": OutboxSettings(max_pending=2)})
    daemon = await spawn(settings=settings)
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    codes = []
    for n in range(3):
        data = {**PLUGIN_INSTALLED, "plugin_id": f"p{n}"}
        code, body = await call(
            hub_settings, "POST", "/v1/events", {"type": "plugin_installed", "data": data}
        )
        codes.append(code)
    assert codes == [201, 201, 503]
    assert "max_pending" in body["error"] or "full" in body["error"]
    status = daemon.status()
    assert status is not None
    assert status["outbox"]["pending"] == 2


# --- the socket's mode from its first instant ------------------------------------

_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100


def _watch_creations(folder: Path) -> int:
    """An inotify descriptor reporting entries created in or moved into ``folder``."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    assert fd >= 0, os.strerror(ctypes.get_errno())
    assert libc.inotify_add_watch(fd, str(folder).encode(), _IN_CREATE | _IN_MOVED_TO) >= 0
    return fd


def _creations(fd: int) -> list[tuple[str, int]]:
    """``(name, mask)`` of every event read from ``fd`` so far."""
    import os
    import struct

    data = b""
    while True:
        try:
            data += os.read(fd, 65536)
        except BlockingIOError:
            break
    events, offset = [], 0
    while offset < len(data):
        _wd, mask, _cookie, size = struct.unpack_from("iIII", data, offset)
        name = data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode()
        events.append((name, mask & (_IN_CREATE | _IN_MOVED_TO)))
        offset += 16 + size
    return events


async def test_the_socket_is_0660_from_its_first_instant_even_under_umask_000(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    # bind() makes the socket file with the umask's mode (0777 under umask 000);
    # a chmod afterwards leaves a moment when anyone may connect and queue
    # events. The socket must appear in runtime_dir already 0660 (moved in).
    import os

    runtime_dir = hub_settings.settings.runtime_dir
    fd = _watch_creations(runtime_dir)
    old_umask = os.umask(0)
    try:
        daemon = await spawn()
    finally:
        os.umask(old_umask)
    try:
        await daemon.wait_status(lambda s: s["daemon"]["running"])
        events = _creations(fd)
    finally:
        os.close(fd)
    sock = hub_settings.settings.control_socket
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    assert ("control.sock", _IN_MOVED_TO) in events
    assert ("control.sock", _IN_CREATE) not in events, "bound in place, then chmodded"
    assert [p.name for p in runtime_dir.iterdir()] == ["control.sock"]  # no staging left
