"""A ``backup_request`` over the real link: answered ``backup_completed``, heartbeats never
held up by the backup (contract sections 2 and 7)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

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
from support.devcloud import FAST_WEBSOCKET, HubEnv, make_hub_env

HEARTBEAT = 0.1
#: Far above the heartbeat interval, far below the backup's duration.
MAX_GAP = 0.5
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
    await cloud.wait_for(lambda: len(cloud.heartbeats(hub_id)) >= 2, timeout=20)

    started = datetime.now(UTC)
    assert await cloud.push(hub_id, {"type": "backup_request", "requested_by": "owner@x.com"})
    await cloud.wait_for(lambda: _completed_frame(cloud.frames(hub_id)) is not None, timeout=50)

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
