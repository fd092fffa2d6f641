"""``hublink status``: from a running daemon, or from the files when none runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hublink.config import Settings
from hublink.link.messages import validate_event
from hublink.link.outbox import Outbox
from support.daemon import settings_env, spawn
from support.devcloud import HubEnv

__all__ = ["spawn"]  # the fixture, imported for pytest


def hublink(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hublink ARGS`` with ``settings`` in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env["HUBLINK_CONFIG"] = os.environ["HUBLINK_CONFIG"]
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "hublink", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status_json(settings: Settings) -> tuple[int, dict[str, Any]]:
    result = hublink(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_not_registered_is_reported_with_exit_0(tmp_path: Path) -> None:
    code, status = status_json(Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run"))
    assert code == 0
    assert status["registered"] is False
    assert status["hub_id"] is None
    assert status["slug"] is None
    assert status["daemon"] == {"running": False, "pid": None}
    # Reading status creates nothing.
    assert not (tmp_path / "state").exists()


def test_registered_without_daemon_shows_null_live_fields_and_the_files(
    hub_settings: HubEnv,
) -> None:
    settings = hub_settings.settings
    outbox = Outbox.open(settings.state_dir, settings.outbox.max_pending)
    for n in range(3):
        outbox.put(
            validate_event(
                "plugin_installed",
                {"plugin_id": f"p{n}", "version": "1", "installed_at": "2026-01-01T00:00:00Z"},
            )
        )
    outbox.close()
    code, status = status_json(settings)
    assert code == 0
    assert status["registered"] is True
    assert status["hub_id"] == hub_settings.hub_id
    assert status["slug"] == hub_settings.creds.slug
    assert status["cloud_url"] == hub_settings.cloud.url
    assert status["daemon"] == {"running": False, "pid": None}
    assert all(value is None for value in status["websocket"].values())
    assert status["websocket"]["state"] is None
    assert all(value is None for value in status["tunnel"].values())
    assert status["outbox"] == {"pending": 3, "dead_letters": 0, "quarantined": 0}
    assert status["plugin_updates"] == []
    assert status["revoked_users"] == []


def test_unreadable_credentials_exit_78(hub_settings: HubEnv) -> None:
    hub_settings.settings.credentials_path.write_text("tunnel_token = ")
    result = hublink(hub_settings.settings, "status")
    assert result.returncode == 78
    assert str(hub_settings.settings.credentials_path) in result.stderr


def test_human_summary_without_daemon(hub_settings: HubEnv) -> None:
    result = hublink(hub_settings.settings, "status")
    assert result.returncode == 0
    out = result.stdout
    assert hub_settings.creds.slug in out
    assert "not running" in out
    assert hub_settings.token not in out


async def test_status_command_shows_the_running_daemon(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    await cloud.push(
        hub_settings.hub_id,
        {"type": "user_revoked", "user_id": "u-7", "email": "cashier@example.com", "reason": "x"},
    )
    await daemon.wait_status(lambda s: s["revoked_users"])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return hublink(hub_settings.settings, "status", *args)

    result = await asyncio.to_thread(run, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["daemon"] == {"running": True, "pid": daemon.pid}
    assert status["websocket"]["state"] == "connected"
    assert status["revoked_users"][0]["user_id"] == "u-7"
    human = await asyncio.to_thread(run)
    assert human.returncode == 0
    assert "connected" in human.stdout
    assert "cashier@example.com" in human.stdout


def test_status_shows_the_last_backup_and_reminds_of_a_missing_owner_key(
    devcloud: Any, tmp_path: Path
) -> None:
    from hublink.config import BackupSettings
    from hublink.link.messages import BackupCompleted
    from hublink.link.notices import StateStore
    from support.devcloud import make_hub_env

    database = tmp_path / "hub.sqlite3"
    hub = make_hub_env(devcloud, tmp_path / "h", backup=BackupSettings(database=database))
    store = StateStore.load(hub.settings.state_dir)
    store.record_backup(
        BackupCompleted(
            backup_id="b-1",
            filename="hub-x.db.zst.age",
            size=1234,
            sha256="0" * 64,
            requested_by="admin@x",
        )
    )
    store.close()
    result = hublink(hub.settings, "status")
    assert result.returncode == 0, result.stderr
    assert "last backup: completed" in result.stdout
    assert "hub-x.db.zst.age" in result.stdout
    assert "backup.recipients" in result.stdout
    _, status = status_json(hub.settings)
    assert status["last_backup"]["backup_id"] == "b-1"
    assert status["backup"] == {"database": str(database), "owner_recipients": 0}


async def test_a_daemon_that_does_not_answer_still_counts_as_running(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    import signal

    daemon = await spawn()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    daemon.proc.send_signal(signal.SIGSTOP)  # a hung daemon: the socket accepts, nobody answers
    try:
        result = await asyncio.to_thread(hublink, hub_settings.settings, "status", "--json")
        human = await asyncio.to_thread(hublink, hub_settings.settings, "status")
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["daemon"]["running"] is True
    assert status["daemon"]["pid"] == daemon.pid
    assert status["websocket"]["state"] is None
    assert "not answering" in human.stdout
