"""The link under faults of the Cloud and of the disk (issue 10, items 9, 10, 22, 23, 24).

Each test runs a real daemon against the reference Cloud; the disk-full ones
put the state dir on a real small file system (a tmpfs, as root).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hublink.link.messages import validate_event
from hublink.link.outbox import MAX_DELIVERY_ATTEMPTS, Outbox
from support.daemon import HublinkProcess, spawn
from support.devcloud import HubEnv, make_hub_env
from support.polling import wait_until
from support.smallfs import fill, small_filesystem

__all__ = ["spawn"]  # the fixture, imported for pytest

PLUGIN = {"plugin_id": "inventory", "version": "2.0", "installed_at": "2026-01-01T00:00:00Z"}


def plugin_event(n: int) -> Any:
    return validate_event("plugin_installed", {**PLUGIN, "plugin_id": f"p{n}"})


def crashes(daemon: HublinkProcess) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e["event"] == "task crashed; restarting it"]


# --- item 9: any delay a server gives is clamped and shown ---------------------------


@pytest.mark.parametrize(
    ("retry_after", "honoured"),
    [
        ("9999999999999", True),  # as reported: OverflowError, a crash loop, "stopped"
        ("9" * 400, True),
        ("Fri, 31 Dec 9999 23:59:59 GMT", True),
        ("-5", False),
        ("NaN", False),
        ("tomorrow, maybe", False),
    ],
)
async def test_any_retry_after_of_a_handshake_is_clamped_and_shown_in_status(
    hub_settings: HubEnv, spawn: Callable[..., Any], retry_after: str, honoured: bool
) -> None:
    cloud = hub_settings.cloud
    cloud.fail_next("/ws/hub/", 503, count=3, retry_after=retry_after)
    daemon = await spawn()
    status = await daemon.wait_status(
        lambda s: (
            s["websocket"]["state"] == "backoff"
            and "Retry-After" in (s["websocket"]["last_error"] or "")
        )
    )
    ws = status["websocket"]
    assert "HTTP 503" in ws["last_error"]
    if honoured:
        assert "at most 1 s" in ws["last_error"]  # max(unauthorized_retry 1 s, reconnect_max)
    else:
        assert "not a delay hublink can read" in ws["last_error"]
    next_attempt = datetime.fromisoformat(ws["next_attempt_at"])
    assert next_attempt - datetime.now(next_attempt.tzinfo) <= timedelta(seconds=1.5)
    # It keeps trying, and links once the Cloud stops refusing.
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
    assert not crashes(daemon)


# --- item 10: one bad event never blocks the outbox ----------------------------------


async def test_an_event_the_cloud_keeps_refusing_becomes_a_dead_letter(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    # As reported: a 1.84 MB user_sync, a Cloud that drops the link for frames over
    # 1 MiB; hublink re-sent it forever and nothing queued after it got through.
    cloud, hub_id = hub_settings.cloud, hub_settings.hub_id
    cloud.max_frame_size = 1024 * 1024
    users = [
        {"cloud_user_id": f"u{n}", "email": f"cajero{n}@example.com", "last_activity": None}
        for n in range(16000)
    ]
    # Queued by an older hublink, or under a larger outbox.max_event_size.
    outbox = Outbox.open(hub_settings.settings.state_dir, max_event_size=4_000_000)
    before = outbox.put(plugin_event(0))
    outbox.put(validate_event("user_sync", {"users": users}))
    after = outbox.put(plugin_event(1))
    outbox.close()
    daemon = await spawn(env={"HUBLINK_OUTBOX__MAX_EVENT_SIZE": "4000000"})
    status = await daemon.wait_status(
        lambda s: s["outbox"]["dead_letters"] == 1 and s["outbox"]["pending"] == 0, timeout=60
    )
    await wait_until(lambda: len(cloud.events(hub_id)) >= 2, what="the other events")
    assert [e["id"] for e in cloud.events(hub_id)] == [before, after]
    # Bounded: the first batch, then the suspect alone until it is set aside.
    assert cloud.connections(hub_id) <= MAX_DELIVERY_ATTEMPTS + 2
    assert status["websocket"]["state"] == "connected"
    [dead] = [e for e in daemon.log_events() if "dead letter" in e["event"]]
    assert dead["attempts"] == MAX_DELIVERY_ATTEMPTS
    # The drops after a send grew the backoff instead of the flat spread delay.
    waits = [e["retry_in"] for e in daemon.log_events() if e["event"] == "link lost; reconnecting"]
    assert len(waits) >= MAX_DELIVERY_ATTEMPTS - 1
    shown = run_cli(daemon, "status")
    assert "1 set aside" in shown.stdout
    with sqlite3.connect(hub_settings.settings.state_dir / "outbox.sqlite3") as conn:
        [(kind,)] = conn.execute("SELECT type FROM dead_letters").fetchall()
    assert kind == "user_sync"


async def test_an_event_over_max_event_size_is_refused_by_the_control_api_and_the_cli(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    from hublink.control import request

    users = [
        {"cloud_user_id": f"u{n}", "email": f"cajero{n}@example.com", "last_activity": None}
        for n in range(16000)
    ]
    # With a daemon running, `hublink send` hands the event to it: its limit rules.
    daemon = await spawn(env={"HUBLINK_OUTBOX__MAX_EVENT_SIZE": "2048"})
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    answer = request(
        hub_settings.settings.control_socket,
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
    sent = run_cli(
        daemon, "send", "user_sync", "--data", data, HUBLINK_OUTBOX__MAX_EVENT_SIZE="2048"
    )
    assert sent.returncode == 2
    assert "max_event_size = 2048" in sent.stderr
    assert "Traceback" not in sent.stderr
    status = await daemon.wait_status(lambda s: s["outbox"]["pending"] == 0)
    assert status["outbox"]["dead_letters"] == 0


# --- item 24: a corrupt outbox at start ---------------------------------------------------


async def test_a_corrupt_outbox_at_start_is_moved_aside_and_the_hub_links(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    state_dir = hub_settings.settings.state_dir
    garbage = os.urandom(4096)  # head -c 4096 /dev/urandom > outbox.sqlite3
    (state_dir / "outbox.sqlite3").write_bytes(garbage)
    daemon = await spawn()
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert status["outbox"] == {"pending": 0, "dead_letters": 0, "quarantined": 1}
    [aside] = state_dir.glob("outbox.sqlite3.corrupt-*Z")
    assert aside.read_bytes() == garbage
    [error] = [e for e in daemon.log_events() if e.get("moved_to") == str(aside)]
    assert error["level"] == "error"
    sent = run_cli(daemon, "send", "plugin_installed", "--data", json.dumps(PLUGIN))
    assert sent.returncode == 0, sent.stderr
    await wait_until(lambda: hub_settings.cloud.events(hub_settings.hub_id), what="the event")
    assert "1 damaged outbox file" in run_cli(daemon, "status").stdout


# --- items 22 and 23: the state dir is full ------------------------------------------------


@pytest.fixture
def full_disk_hub(hub_settings: HubEnv, tmp_path: Path) -> Any:
    """A hub whose state dir is a small tmpfs (its log file stays outside it)."""
    base = tmp_path / "small"
    state = base / "state"
    with small_filesystem(state, size="6m"):
        database = tmp_path / "hub.sqlite3"
        with sqlite3.connect(database) as conn:
            conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
            conn.executemany("INSERT INTO sales (total) VALUES (?)", [(n,) for n in range(2000)])
        yield make_hub_env(
            hub_settings.cloud, base, name="Full Disk", backup={"database": database}
        )


async def test_a_full_state_dir_keeps_the_link_up_and_names_the_disk(
    full_disk_hub: HubEnv, spawn: Callable[..., Any]
) -> None:
    hub = full_disk_hub
    cloud, hub_id, state = hub.cloud, hub.hub_id, hub.settings.state_dir
    port = cloud.port
    daemon = await spawn(hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    await cloud.stop()
    outbox = Outbox.open(state)
    ids = [outbox.put(plugin_event(n)) for n in range(20)]
    outbox.close()
    filler = fill(state)
    await cloud.start(port=port)
    status = await daemon.wait_status(
        lambda s: (
            s["websocket"]["state"] == "connected"
            and "full" in (s["websocket"]["last_error"] or "")
        ),
        timeout=30,
    )
    assert "cannot be removed from the outbox" in status["websocket"]["last_error"]
    assert "database or disk is full" in run_cli(daemon, "status").stdout
    await wait_until(lambda: len(cloud.events(hub_id)) >= 20, what="the 20 events")
    assert [e["id"] for e in cloud.events(hub_id)] == ids
    # The link stays up: heartbeats and commands keep flowing.
    seen = len(cloud.heartbeats(hub_id))
    await wait_until(lambda: len(cloud.heartbeats(hub_id)) >= seen + 5, what="heartbeats")
    command = {"type": "user_revoked", "user_id": "u-1", "email": "a@b.c", "reason": "left"}
    assert await cloud.push(hub_id, command)
    await daemon.wait_status(lambda s: [u["user_id"] for u in s["revoked_users"]] == ["u-1"])
    assert cloud.connections(hub_id) == 2  # before and after the Cloud's restart, no more
    # Bounded: each event went out once on this link, however long the disk stays full.
    frames = [f["data"] for f in cloud.frames(hub_id) if isinstance(f["data"], str)]
    assert all(sum(event_id in frame for frame in frames) == 1 for event_id in ids)
    assert not crashes(daemon)
    # Room again: the delivered events leave the outbox and the error clears.
    filler.unlink()
    await daemon.wait_status(
        lambda s: s["outbox"]["pending"] == 0 and s["websocket"]["last_error"] is None, timeout=30
    )


async def test_a_backup_answer_reaches_the_cloud_when_the_state_dir_is_full(
    full_disk_hub: HubEnv, spawn: Callable[..., Any]
) -> None:
    hub = full_disk_hub
    cloud, hub_id = hub.cloud, hub.hub_id
    daemon = await spawn(hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    fill(hub.settings.state_dir)
    assert await cloud.push(hub_id, {"type": "backup_request", "requested_by": "owner-7"})
    await wait_until(
        lambda: [e for e in cloud.events(hub_id) if e["type"] == "backup_failed"],
        what="the backup_failed answer",
    )
    [answer] = [e for e in cloud.events(hub_id) if e["type"] == "backup_failed"]
    assert answer["requested_by"] == "owner-7"
    assert answer["error"]
    assert any(e["event"].startswith("cannot queue the answer") for e in daemon.log_events())
    assert not crashes(daemon)


def run_cli(daemon: HublinkProcess, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    settings = daemon.settings
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    base |= {
        "HUBLINK_CONFIG": os.environ["HUBLINK_CONFIG"],
        "HUBLINK_STATE_DIR": str(settings.state_dir),
        "HUBLINK_RUNTIME_DIR": str(settings.runtime_dir),
        "HUBLINK_CLOUD_URL": settings.cloud_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "hublink", *args],
        env=base | env,
        capture_output=True,
        text=True,
        check=False,
    )
