"""Contract section 8, the control API: the unix socket of a real ``hublink run``.

What it proves: ``GET /v1/status`` is the contract's status object; the socket
is 0660 from its first instant (even under umask 000), replaces a stale one
left by a crash and is removed on exit, its runtime dir created when missing;
``POST /v1/events`` queues durably and answers 201 with the id the Cloud then
receives, 400 for a body that is not JSON, 422 naming the bad fields (and data
JSON cannot carry faithfully), 503 when the outbox is full; events posted while
the Cloud is down wait in the outbox; an event over ``outbox.max_event_size``
is refused (422, and exit 2 from ``hublink send``); ``POST /v1/poke`` drains the outbox at
once, even for an event another process queued.
"""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import json
import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any

from hublink.config import OutboxSettings
from hublink.control import fetch_status, poke, request
from support.cloud import HubEnv
from support.daemon import Daemons
from support.outbox import queue_events
from support.polling import wait_until

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


async def test_status_is_the_contract_object(hub: HubEnv, daemons: Daemons) -> None:
    daemon = await daemons.start()
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert set(status) >= CONTRACT_KEYS
    assert status["registered"] is True
    assert status["hub_id"] == hub.hub_id
    assert status["slug"] == hub.creds.slug
    assert status["cloud_url"] == hub.cloud.url
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
    assert status["outbox"] == {"pending": 0, "dead_letters": 0, "quarantined": 0}
    assert status["plugin_updates"] == []
    assert status["revoked_users"] == []
    assert await fetch_status(hub.settings.control_socket) is not None


async def test_the_socket_is_0660_and_removed_on_exit(hub: HubEnv, daemons: Daemons) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    path = hub.settings.control_socket
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert await daemon.terminate() == 0
    assert not path.exists()


async def test_posted_events_are_queued_and_delivered_with_their_id(
    hub: HubEnv, daemons: Daemons
) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    code, body = await call(
        hub, "POST", "/v1/events", {"type": "plugin_installed", "data": PLUGIN_INSTALLED}
    )
    assert code == 201
    event_id = body["id"]
    await wait_until(lambda: cloud.events(hub.hub_id), what="the event at the Cloud")
    [event] = cloud.events(hub.hub_id)
    assert event["id"] == event_id
    assert event["type"] == "plugin_installed"
    assert event["plugin_id"] == "inventory"
    await daemon.wait_status(lambda s: s["outbox"]["pending"] == 0)


async def test_events_posted_while_the_cloud_is_down_wait_in_the_outbox(
    hub: HubEnv, daemons: Daemons
) -> None:
    cloud = hub.cloud
    port = cloud.port
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    await cloud.stop()
    ids = []
    for n in range(3):
        data = {**PLUGIN_INSTALLED, "plugin_id": f"p{n}"}
        code, body = await call(
            hub, "POST", "/v1/events", {"type": "plugin_installed", "data": data}
        )
        assert code == 201
        ids.append(body["id"])
    await daemon.wait_status(lambda s: s["outbox"]["pending"] == 3)
    await cloud.start(port=port)
    await wait_until(lambda: len(cloud.events(hub.hub_id)) >= 3, what="3 events")
    assert [e["id"] for e in cloud.events(hub.hub_id)] == ids


async def test_invalid_events_get_422_with_the_problems(hub: HubEnv, daemons: Daemons) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    code, body = await call(
        hub, "POST", "/v1/events", {"type": "plugin_installed", "data": {"version": 3}}
    )
    assert code == 422
    assert any("plugin_id" in problem for problem in body["problems"])
    code, body = await call(hub, "POST", "/v1/events", {"type": "heartbeat", "data": {}})
    assert code == 422
    code, body = await call(hub, "POST", "/v1/events", {"data": {}})
    assert code == 422
    code, body = await call(hub, "POST", "/v1/events", {"type": "user_sync", "data": "nope"})
    assert code == 422
    status = daemon.status()
    assert status is not None
    assert status["outbox"]["pending"] == 0


async def test_a_body_that_is_not_json_gets_400(hub: HubEnv, daemons: Daemons) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["daemon"]["running"])

    def raw() -> int:
        conn = http.client.HTTPConnection("hublink")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.connect(str(hub.settings.control_socket))
        conn.request("POST", "/v1/events", body=b"{not json", headers={"Content-Length": "9"})
        status = conn.getresponse().status
        conn.close()
        return status

    assert await asyncio.to_thread(raw) == 400


async def test_data_json_cannot_carry_faithfully_is_refused_and_nothing_queued(
    hub: HubEnv, daemons: Daemons
) -> None:
    # Issue 10, item 6's kind through the control API: what `hublink send` refuses.

    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    event = json.dumps({"type": "plugin_installed", "data": PLUGIN_INSTALLED})[:-2]
    bodies = {
        event + ', "n": NaN}}': (422, "NaN is not a JSON number"),
        event + ', "n": 1e999}}': (422, "Infinity is not a JSON number"),
        event + ', "n": "left \\ud83d"}}': (422, "lone UTF-16 surrogate"),
        event + ', "n": ' + "1" * 5000 + "}}": (400, None),
        event + ', "n": ' + "[" * 10_000 + "]" * 10_000 + "}}": (400, None),
    }

    def post(body: bytes) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("hublink")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.connect(str(hub.settings.control_socket))
        conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        result = answer.status, json.loads(answer.read() or b"null")
        conn.close()
        return result

    for body, (expected, named) in bodies.items():
        code, answer = await asyncio.to_thread(post, body.encode())
        assert code == expected, (body[-40:], answer)
        if named is not None:
            assert named in answer["problems"][0]
    status = daemon.status()
    assert status is not None
    assert status["outbox"]["pending"] == 0


async def test_an_event_over_max_event_size_is_refused_by_the_control_api_and_the_cli(
    hub: HubEnv, daemons: Daemons
) -> None:
    users = [
        {"cloud_user_id": f"u{n}", "email": f"cajero{n}@example.com", "last_activity": None}
        for n in range(16000)
    ]
    # With a daemon running, `hublink send` hands the event to it: its limit rules.
    daemon = await daemons.start(env={"HUBLINK_OUTBOX__MAX_EVENT_SIZE": "2048"})
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    answer = request(
        hub.settings.control_socket,
        "POST",
        "/v1/events",
        {"type": "user_sync", "data": {"users": users}},
    )
    assert answer is not None
    code, body = answer
    assert code == 422
    assert "outbox.max_event_size" in body["error"]
    assert body["problems"][0].startswith("(event): ")
    data = json.dumps({"users": users[:40]})  # ~2.6 kB, over a 2 kB limit
    sent = daemon.run_cli(
        "send", "user_sync", "--data", data, HUBLINK_OUTBOX__MAX_EVENT_SIZE="2048"
    )
    assert sent.returncode == 2
    assert "max_event_size = 2048" in sent.stderr
    assert "Traceback" not in sent.stderr
    status = await daemon.wait_status(lambda s: s["outbox"]["pending"] == 0)
    assert status["outbox"]["dead_letters"] == 0


async def test_poke_answers_true_with_a_daemon(hub: HubEnv, daemons: Daemons) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert await asyncio.to_thread(poke, hub.settings.control_socket)


async def test_a_full_outbox_refuses_with_503_and_a_clear_error(
    hub: HubEnv, daemons: Daemons
) -> None:
    await hub.cloud.stop()  # nothing drains
    settings = hub.settings.model_copy(update={"outbox": OutboxSettings(max_pending=2)})
    daemon = await daemons.start(settings=settings)
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    codes = []
    for n in range(3):
        data = {**PLUGIN_INSTALLED, "plugin_id": f"p{n}"}
        code, body = await call(
            hub, "POST", "/v1/events", {"type": "plugin_installed", "data": data}
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

    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    assert fd >= 0, os.strerror(ctypes.get_errno())
    assert libc.inotify_add_watch(fd, str(folder).encode(), _IN_CREATE | _IN_MOVED_TO) >= 0
    return fd


def _creations(fd: int) -> list[tuple[str, int]]:
    """``(name, mask)`` of every event read from ``fd`` so far."""

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
    hub: HubEnv, daemons: Daemons
) -> None:
    # bind() makes the socket file with the umask's mode (0777 under umask 000);
    # a chmod afterwards leaves a moment when anyone may connect and queue
    # events. The socket must appear in runtime_dir already 0660 (moved in).

    runtime_dir = hub.settings.runtime_dir
    fd = _watch_creations(runtime_dir)
    old_umask = os.umask(0)
    try:
        daemon = await daemons.start()
    finally:
        os.umask(old_umask)
    try:
        await daemon.wait_status(lambda s: s["daemon"]["running"])
        events = _creations(fd)
    finally:
        os.close(fd)
    sock = hub.settings.control_socket
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    assert ("control.sock", _IN_MOVED_TO) in events
    assert ("control.sock", _IN_CREATE) not in events, "bound in place, then chmodded"
    assert [p.name for p in runtime_dir.iterdir()] == ["control.sock"]  # no staging left


# --- the socket's life, and a poke ------------------------------------------------------


async def test_a_stale_socket_from_a_crashed_run_is_replaced(hub: HubEnv, daemons: Daemons) -> None:
    path = hub.settings.control_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # closed without unlink: what a kill -9 leaves behind
    assert path.exists()
    daemon = await daemons.start()
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["daemon"]["pid"] == daemon.pid
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


async def test_a_kill_9_leaves_a_socket_the_next_run_replaces(
    hub: HubEnv, daemons: Daemons
) -> None:
    first = await daemons.start()
    await first.wait_status(lambda s: s["daemon"]["running"])
    await first.kill()
    assert hub.settings.control_socket.exists()
    second = await daemons.start()
    status = await second.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert status["daemon"]["pid"] == second.pid


async def test_the_runtime_dir_is_created_when_missing(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    settings = hub.settings.model_copy(update={"runtime_dir": tmp_path / "fresh" / "hublink"})
    daemon = await daemons.start(settings=settings)
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert settings.control_socket.exists()
    assert await daemon.terminate() == 0
    assert not settings.control_socket.exists()


async def test_an_event_queued_by_another_process_leaves_after_a_poke(
    hub: HubEnv, daemons: Daemons
) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    [event_id] = queue_events(hub.settings, 1)
    sent_at = time.monotonic()
    assert await asyncio.to_thread(poke, hub.settings.control_socket)
    await wait_until(lambda: cloud.events(hub.hub_id), what="the event")
    assert time.monotonic() - sent_at < 1.0
    assert cloud.events(hub.hub_id)[0]["id"] == event_id
