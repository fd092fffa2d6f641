"""``hublink run`` answering the Cloud's ``backup_request`` (contract sections 2 and 7):
one backup at a time, heartbeats flowing throughout, the result shown by ``status``."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hublink.config import BackupSettings, WebSocketSettings
from hublink.devcloud import DevCloud
from support.backup import make_database
from support.daemon import HublinkProcess
from support.devcloud import FAST_WEBSOCKET, make_hub_env
from support.polling import wait_until

#: Far above the 0.1 s heartbeat interval, far below the backup's duration.
MAX_GAP = 0.5


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
        websocket=WebSocketSettings(**(FAST_WEBSOCKET | {"heartbeat_interval": 0.1})),
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
