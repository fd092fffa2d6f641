"""Contract section 7, backups: a ``backup_request`` over the real link, and ``hublink backup``,
against the reference Cloud.

What it proves: the daemon backs up on request, uploads and answers
``backup_completed`` (and ``status`` shows it); one backup at a time, a second
request answered ``backup_failed``; heartbeats keep flowing while a big backup
is compressed and encrypted (in the daemon, and in the link's own loop); log
lines name the backup task; ``hublink backup`` uploads and remembers it, and a
revoked hub exits 77 leaving nothing behind; a scheduled backup missed while
the box was off runs after the start (a section 11 flow, here until that
section has its own file). The pipeline's own rules
(snapshots under load, recipients, restore) are in tests/backup/.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hublink.backup.schedule import ScheduleState, local_zone
from hublink.backup.service import BackupService
from hublink.cloud.client import make_session
from hublink.config import BackupSettings, WebSocketSettings
from hublink.devcloud import DevCloud
from hublink.link.connection import Link
from hublink.link.dispatch import Dispatcher
from hublink.link.notices import StateStore
from hublink.link.outbox import AsyncOutbox
from hublink.live import LiveState
from hublink.retry import RetryPolicy
from support.backup import list_temp_leftovers, make_database
from support.cli import run_hublink
from support.cloud import FAST_WEBSOCKET, HubEnv, make_hub_env
from support.daemon import Daemons, HublinkProcess
from support.polling import wait_until
from support.timing import scaled

#: Far above the 0.1 s heartbeat interval, far below the backup's duration.
MAX_GAP = scaled(0.5)


def _answers(cloud: DevCloud, hub_id: str) -> list[dict[str, Any]]:
    return [e for e in cloud.events(hub_id) if e["type"] in ("backup_completed", "backup_failed")]


def _frame_time(cloud: DevCloud, hub_id: str, marker: str) -> datetime:
    return next(f["received_at"] for f in cloud.frames(hub_id) if marker in str(f["data"]))


@pytest.mark.slow
async def test_the_daemon_backs_up_on_request_one_at_a_time_without_missing_heartbeats(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    db = tmp_path / "hub.sqlite3"
    await asyncio.to_thread(make_database, db, rows=250_000, blob=1000)
    hub = make_hub_env(
        devcloud,
        tmp_path,
        backup=BackupSettings(database=db),
        websocket=WebSocketSettings(**(FAST_WEBSOCKET | {"heartbeat_interval": scaled(0.1)})),
    )
    daemon = await HublinkProcess(hub).start()
    try:
        await wait_until(lambda: len(devcloud.heartbeats(hub.hub_id)) >= 2, 20, "the link")
        started = datetime.now(UTC)
        await devcloud.push(hub.hub_id, {"type": "backup_request", "requested_by": "first@x.com"})
        await devcloud.push(hub.hub_id, {"type": "backup_request", "requested_by": "second@x.com"})
        await wait_until(lambda: len(_answers(devcloud, hub.hub_id)) >= 2, 50, "two answers")
        status = await daemon.wait_status(
            lambda s: (s["last_backup"] or {}).get("result") == "completed"
        )
    finally:
        await daemon.stop()

    by_requester = {a["requested_by"]: a for a in _answers(devcloud, hub.hub_id)}
    first, second = by_requester["first@x.com"], by_requester["second@x.com"]
    assert first["type"] == "backup_completed", first
    assert (second["type"], second["error"]) == ("backup_failed", "a backup is already running")
    [record] = devcloud.backup_records(hub.hub_id)
    assert (first["backup_id"], first["sha256"], first["size"]) == (
        record.backup_id,
        record.sha256,
        record.size,
    )
    assert status["last_backup"]["backup_id"] == record.backup_id
    # Its log lines name the task, those written by the worker thread included.
    lines = [
        e for e in daemon.log_events() if e.get("event") in ("backup sealed", "backup uploaded")
    ]
    assert len(lines) == 2 and all(e.get("task") == "backup" for e in lines), lines
    assert status["last_backup"]["size"] == record.size

    finished = _frame_time(devcloud, hub.hub_id, '"backup_completed"')
    beats = [b["received_at"] for b in devcloud.heartbeats(hub.hub_id)]
    moments = [started, *(t for t in beats if started < t < finished), finished]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
    assert (finished - started).total_seconds() > 2 * MAX_GAP, "the backup was too quick to tell"
    assert max(gaps) < MAX_GAP, f"a heartbeat waited {max(gaps):.2f} s during the backup"


async def test_a_scheduled_backup_missed_while_off_reaches_the_cloud_after_the_start(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    db = tmp_path / "hub.sqlite3"
    make_database(db, rows=100)
    # The box was off at today's slot (a minute ago, in the zone the daemon will use too)
    # and its last scheduled backup was two days ago.
    now = datetime.now(local_zone())
    slot = now - timedelta(minutes=1)
    hub = make_hub_env(
        devcloud,
        tmp_path,
        backup=BackupSettings(database=db, schedule=f"{slot:%H:%M}", schedule_jitter=0),
    )
    ScheduleState(0.5, slot.date() - timedelta(days=2)).save(hub.settings.state_dir)
    daemon = await HublinkProcess(hub).start()
    try:
        await wait_until(lambda: _answers(devcloud, hub.hub_id), 30, "the scheduled backup")
        status = await daemon.wait_status(
            lambda s: (s["last_backup"] or {}).get("requested_by") == "schedule"
        )
    finally:
        await daemon.stop()
    [answer] = _answers(devcloud, hub.hub_id)
    assert (answer["type"], answer["requested_by"]) == ("backup_completed", "schedule")
    [record] = devcloud.backup_records(hub.hub_id)
    assert record.backup_id == answer["backup_id"]
    # Next: tomorrow's slot (jitter 0, so exactly the schedule's time).
    next_at = datetime.fromisoformat(status["next_backup_at"]).astimezone(local_zone())
    assert (next_at.date(), f"{next_at:%H:%M}") == (
        slot.date() + timedelta(days=1),
        f"{slot:%H:%M}",
    )
    state = ScheduleState.load(hub.settings.state_dir)
    assert state is not None and state.last_slot == slot.date()
    assert isinstance(state.last_slot, date)


# --- the link's own loop: a big backup never holds a heartbeat up ------------------------


HEARTBEAT = scaled(0.1)
MIN_BACKUP_SECONDS = 1.0


def big_database(path: Path, megabytes: int) -> None:
    """Incompressible rows, so compression and encryption really work for their time."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, payload BLOB)")
    rows = megabytes * 1000
    for start in range(0, rows, 50_000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO item(payload) VALUES (randomblob(1000))",
            ((),) * min(50_000, rows - start),
        )
        conn.execute("COMMIT")
    conn.close()


@dataclass
class RunningHub:
    hub: HubEnv
    live: LiveState


@pytest.fixture
async def running_hub(devcloud: DevCloud, tmp_path: Path) -> AsyncIterator[RunningHub]:
    """The daemon's parts in this loop: link, dispatcher, outbox, store, and the backup runner."""
    db = tmp_path / "hub.sqlite3"
    await asyncio.to_thread(big_database, db, 250)
    hub = make_hub_env(
        devcloud,
        tmp_path,
        backup=BackupSettings(database=db),
        websocket=WebSocketSettings(**(FAST_WEBSOCKET | {"heartbeat_interval": HEARTBEAT})),
    )
    state_dir = hub.settings.state_dir
    live = LiveState()
    store = await asyncio.to_thread(StateStore.load, state_dir)
    outbox = await AsyncOutbox.open(state_dir, 1000)
    policy = RetryPolicy(attempts=2, deadline=None, backoff_base=0.01, request_timeout=30)
    try:
        async with make_session(hub.settings) as session:
            backups = BackupService(hub.settings, hub.creds, session, upload_policy=policy)
            dispatcher = Dispatcher(hub.settings, store, outbox, backup=backups.run_requested)
            link = Link(hub.settings, hub.creds, live, outbox, dispatcher)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(dispatcher.run()), group.create_task(link.run())]
                try:
                    yield RunningHub(hub, live)
                finally:
                    for task in tasks:
                        task.cancel()
    finally:
        await outbox.close()
        await store.aclose()


def _completed_frame(frames: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((f for f in frames if '"backup_completed"' in str(f["data"])), None)


@pytest.mark.slow
async def test_heartbeats_keep_flowing_during_a_big_backup(running_hub: RunningHub) -> None:
    cloud, hub_id = running_hub.hub.cloud, running_hub.hub.hub_id
    await wait_until(lambda: len(cloud.heartbeats(hub_id)) >= 2, timeout=20)

    started = datetime.now(UTC)
    assert await cloud.push(hub_id, {"type": "backup_request", "requested_by": "owner@x.com"})
    await wait_until(lambda: _completed_frame(cloud.frames(hub_id)) is not None, timeout=50)

    done = _completed_frame(cloud.frames(hub_id))
    assert done is not None
    [event] = [e for e in cloud.events(hub_id) if e["type"] == "backup_completed"]
    [record] = cloud.backup_records(hub_id)
    assert (event["backup_id"], event["sha256"]) == (record.backup_id, record.sha256)
    assert event["requested_by"] == "owner@x.com"
    finished = done["received_at"]
    assert finished - started > timedelta(seconds=MIN_BACKUP_SECONDS), "backup too quick to tell"
    moments = [
        started,
        *(b["received_at"] for b in cloud.heartbeats(hub_id) if started < b["received_at"]),
    ]
    moments = [m for m in moments if m <= finished] + [finished]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(moments)]
    assert max(gaps) < MAX_GAP, f"a heartbeat waited {max(gaps):.2f} s during the backup"


# --- hublink run, then hublink backup -------------------------------------------------------


async def test_a_backup_request_is_backed_up_uploaded_and_answered(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    database = tmp_path / "hub.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
        conn.executemany("INSERT INTO sales (total) VALUES (?)", [(n * 1.5,) for n in range(500)])
    conn.close()
    hub = make_hub_env(devcloud, tmp_path / "h", backup=BackupSettings(database=database))
    daemon = await daemons.start(hub)
    await wait_until(lambda: hub.heartbeats, what="first heartbeat")
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


@pytest.fixture
def backup_hub(devcloud: DevCloud, tmp_path: Path) -> HubEnv:
    """An enrolled hub whose Hub database holds 3000 rows."""
    db = tmp_path / "hub.sqlite3"
    make_database(db, rows=3000)
    return make_hub_env(devcloud, tmp_path, backup=BackupSettings(database=db))


async def test_hublink_backup_uploads_and_remembers_it(
    backup_hub: HubEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert backup_hub.settings.backup.database is not None
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(backup_hub.settings.state_dir))
    monkeypatch.setenv("HUBLINK_CLOUD_URL", backup_hub.cloud.url)
    monkeypatch.setenv("HUBLINK_BACKUP__DATABASE", str(backup_hub.settings.backup.database))

    result = await asyncio.to_thread(run_hublink, "backup")

    assert result.returncode == 0, result.stderr
    [record] = backup_hub.cloud.backup_records(backup_hub.hub_id)
    assert f"backup_id: {record.backup_id}" in result.stdout
    assert f"sha256:    {record.sha256}" in result.stdout
    last = StateStore.load(backup_hub.settings.state_dir).snapshot()["last_backup"]
    assert last["result"] == "completed"
    assert last["size"] == record.size and last["backup_id"] == record.backup_id


async def test_hublink_backup_with_a_revoked_hub_exits_77(
    backup_hub: HubEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert backup_hub.settings.backup.database is not None
    await backup_hub.cloud.revoke(backup_hub.hub_id)
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(backup_hub.settings.state_dir))
    monkeypatch.setenv("HUBLINK_CLOUD_URL", backup_hub.cloud.url)
    monkeypatch.setenv("HUBLINK_BACKUP__DATABASE", str(backup_hub.settings.backup.database))

    result = await asyncio.to_thread(run_hublink, "backup")

    assert result.returncode == 77, result.stderr
    assert "rejected this hub's credential" in result.stderr
    last = StateStore.load(backup_hub.settings.state_dir).snapshot()["last_backup"]
    assert last["result"] == "failed"
    assert "rejected this hub's credential" in last["error"]
    assert list_temp_leftovers(backup_hub.settings.state_dir) == []
