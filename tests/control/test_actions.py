"""``POST /v1/backup``, ``POST /v1/plugin-updates/{plugin_id}/install`` and ``GET /v1/doctor``
(contract sections 6 and 8) against a real daemon, a real SQLite file and the reference Cloud."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hublink.devcloud import DevCloud
from hublink.statedir import BACKUP_LOCK, exclusive_lock
from support.backup import make_database
from support.cloud import HubEnv, make_hub_env
from support.daemon import Daemons, HublinkProcess
from support.hubs import connected, running, unregistered_hub
from support.polling import wait_until

UPDATE = {
    "type": "plugin_update_available",
    "plugin_id": "inventory",
    "current_version": "1.2.0",
    "new_version": "1.3.0",
    "download_url": "https://cloud.example/plugins/inventory-1.3.0.zip",
}
#: A hook that writes its stdin and HUBLINK_MESSAGE_TYPE to the file named by its argument.
RECORDING_HOOK = """
import json, os, sys
message = json.load(sys.stdin)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"env": os.environ["HUBLINK_MESSAGE_TYPE"], "stdin": message}) + "\\n")
"""


def hub_with(devcloud: DevCloud, tmp_path: Path, **overrides: Any) -> HubEnv:
    return make_hub_env(devcloud, tmp_path / "hub", **overrides)


def installer(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """The install hook's argv and the file it writes."""
    script = tmp_path / "install.py"
    script.write_text(RECORDING_HOOK)
    calls = tmp_path / "installs.jsonl"
    return (sys.executable, str(script), str(calls)), calls


async def connected_daemon(daemons: Daemons, hub: HubEnv) -> HublinkProcess:
    daemon = await daemons.start(hub)
    await daemon.wait_status(connected)
    return daemon


# --- POST /v1/backup -------------------------------------------------------------------


async def test_backup_now_is_202_uploads_and_tells_the_cloud(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    database = tmp_path / "shop.sqlite3"
    make_database(database, rows=300)
    hub = hub_with(devcloud, tmp_path)
    hub = HubEnv(
        hub.settings.model_copy(
            update={"backup": hub.settings.backup.model_copy(update={"database": database})}
        ),
        hub.creds,
        hub.cloud,
    )
    daemon = await connected_daemon(daemons, hub)

    assert await daemon.call("POST", "/v1/backup", {}) == (202, {"started": True})

    status = await daemon.wait_status(lambda s: s["last_backup"] is not None)
    assert status["last_backup"]["result"] == "completed", status["last_backup"]
    assert status["last_backup"]["requested_by"] == "local"
    assert len(devcloud.backup_records(hub.hub_id)) == 1
    answer = await wait_until(
        lambda: [e for e in devcloud.events(hub.hub_id) if e["type"] == "backup_completed"],
        what="the backup_completed answer",
    )
    assert answer[0]["requested_by"] == "local"
    assert answer[0]["backup_id"] == status["last_backup"]["backup_id"]


async def backing_up_daemon(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> tuple[HubEnv, HublinkProcess]:
    """A connected daemon whose ``backup.database`` is a small SQLite file."""
    database = tmp_path / "shop.sqlite3"
    make_database(database, rows=50)
    hub = hub_with(devcloud, tmp_path)
    backup = hub.settings.backup.model_copy(update={"database": database})
    daemon = await daemons.start(hub, settings=hub.settings.model_copy(update={"backup": backup}))
    await daemon.wait_status(connected)
    return hub, daemon


async def test_backup_now_while_one_runs_is_409(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub, daemon = await backing_up_daemon(devcloud, tmp_path, daemons)
    # The Cloud takes its time over the upload: the first backup is still running.
    devcloud.fail_next(f"/api/hubs/{hub.hub_id}/backups/", None, delay=5.0)

    assert (await daemon.call("POST", "/v1/backup"))[0] == 202
    code, body = await daemon.call("POST", "/v1/backup", {})

    assert code == 409, body
    assert body["error"] == "a backup is already running" and body["hint"]
    status = await daemon.wait_status(lambda s: s["last_backup"] is not None, timeout=30)
    assert status["last_backup"]["result"] == "completed"
    assert len(devcloud.backup_records(hub.hub_id)) == 1


async def test_backup_now_while_hublink_backup_runs_in_another_shell_is_409(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub, daemon = await backing_up_daemon(devcloud, tmp_path, daemons)

    # What `hublink backup` holds while it runs (one backup at a time, across processes).
    with exclusive_lock(hub.settings.state_dir / BACKUP_LOCK, wait=False):
        code, body = await daemon.call("POST", "/v1/backup", {})
    assert code == 409, body
    assert body["error"] == "a backup is already running"

    # Once it is done, the next one starts.
    assert (await daemon.call("POST", "/v1/backup", {}))[0] == 202


async def test_backup_now_before_registration_is_409_saying_so(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await daemons.start(unregistered_hub(devcloud, tmp_path))
    await daemon.wait_status(running)
    code, body = await daemon.call("POST", "/v1/backup", {})
    assert code == 409
    assert "not registered" in body["error"] and "register" in body["hint"]


# --- POST /v1/plugin-updates/{plugin_id}/install ---------------------------------------


async def test_install_runs_the_hook_with_the_recorded_message_until_the_hub_says_installed(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    argv, calls = installer(tmp_path)
    hub = hub_with(devcloud, tmp_path, hooks={"install_plugin_update": argv})
    daemon = await connected_daemon(daemons, hub)
    assert await devcloud.push(hub.hub_id, UPDATE)
    await daemon.wait_status(lambda s: bool(s["plugin_updates"]))

    code, body = await daemon.call("POST", "/v1/plugin-updates/inventory/install", {})

    assert (code, body) == (202, {"started": True, "plugin_id": "inventory"})
    await wait_until(lambda: calls.exists() and calls.read_text(), what="the install hook")
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert call == {"env": "install_plugin_update", "stdin": UPDATE}
    # Still listed: only the Hub application's plugin_installed clears it (contract 6).
    status = daemon.status()
    assert status is not None and [u["plugin_id"] for u in status["plugin_updates"]] == [
        "inventory"
    ]
    installed = {
        "plugin_id": "inventory",
        "version": "1.3.0",
        "installed_at": "2026-01-28T09:00:00Z",
    }
    assert (
        await daemon.call("POST", "/v1/events", {"type": "plugin_installed", "data": installed})
    )[0] == 201
    await daemon.wait_status(lambda s: s["plugin_updates"] == [])


async def test_install_of_an_update_not_recorded_is_404(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    argv, calls = installer(tmp_path)
    daemon = await connected_daemon(
        daemons, hub_with(devcloud, tmp_path, hooks={"install_plugin_update": argv})
    )
    for plugin in ("inventory", "no%20such", "x" * 300):
        code, body = await daemon.call("POST", f"/v1/plugin-updates/{plugin}/install")
        assert code == 404, body
        assert "no update is recorded" in body["error"] and body["hint"]
    assert not calls.exists()


async def test_install_without_an_install_hook_is_409_naming_the_setting(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = hub_with(devcloud, tmp_path)
    daemon = await connected_daemon(daemons, hub)
    assert await devcloud.push(hub.hub_id, UPDATE)
    await daemon.wait_status(lambda s: bool(s["plugin_updates"]))

    code, body = await daemon.call("POST", "/v1/plugin-updates/inventory/install", {})

    assert code == 409
    assert "install_plugin_update" in body["error"] and "[hooks]" in body["hint"]


# --- GET /v1/doctor --------------------------------------------------------------------


async def test_doctor_is_the_doctor_json_object_run_by_the_daemon(
    hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await connected_daemon(daemons, hub)

    code, report = await daemon.call("GET", "/v1/doctor")

    assert code == 200
    assert set(report) == {"ok", "checks"}
    checks = {check["name"]: check for check in report["checks"]}
    for check in checks.values():
        assert set(check) == {"name", "status", "detail", "hint"}
        assert check["status"] in ("pass", "warn", "fail", "skip")
    assert checks["credentials"]["status"] == "pass"
    assert checks["websocket"]["status"] == "pass"  # the daemon's own link, not a second one
    assert checks["daemon"]["status"] == "pass", checks["daemon"]
    assert checks["page"]["status"] == "pass" and "127.0.0.1" in checks["page"]["detail"]
    assert hub.cloud.connections(hub.hub_id) == 1
