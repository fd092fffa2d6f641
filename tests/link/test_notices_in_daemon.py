"""What the Cloud told the hub, as a running daemon keeps it (issue 10, items 16 and 27)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hublink.credentials import CredentialStore
from hublink.status import summary_lines
from support.daemon import spawn
from support.devcloud import HubEnv, make_hub_env

__all__ = ["spawn"]  # the fixture, imported for pytest


def revocation(user: str) -> dict[str, str]:
    return {"type": "user_revoked", "user_id": user, "email": f"{user}@x.example", "reason": "x"}


async def test_after_re_registering_status_shows_nothing_of_the_previous_hub(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    cloud, old_id = hub_settings.cloud, hub_settings.hub_id
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert await cloud.push(old_id, revocation("u-old"))
    # No backup.database: the request fails, and that is the last backup.
    assert await cloud.push(old_id, {"type": "backup_request", "requested_by": "owner"})
    await daemon.wait_status(lambda s: bool(s["revoked_users"]) and s["last_backup"] is not None)
    # Re-registered as a new hub (`hublink register --force` in another shell).
    new = make_hub_env(cloud, tmp_path / "new", name="New Hub")
    store = CredentialStore(hub_settings.settings.state_dir)
    with store.locked():
        store.save(new.creds)
    status = await daemon.wait_status(
        lambda s: s["hub_id"] == new.hub_id and s["websocket"]["state"] == "connected", timeout=30
    )
    assert status["revoked_users"] == []
    assert status["last_backup"] is None
    assert await cloud.push(new.hub_id, revocation("u-new"))
    await daemon.wait_status(lambda s: [u["user_id"] for u in s["revoked_users"]] == ["u-new"])
    assert await daemon.terminate() == 0
    # Without a daemon, from the files: the same.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env |= {
        "HUBLINK_CONFIG": os.environ["HUBLINK_CONFIG"],
        "HUBLINK_STATE_DIR": str(hub_settings.settings.state_dir),
        "HUBLINK_RUNTIME_DIR": str(hub_settings.settings.runtime_dir),
    }
    shown = subprocess.run(
        [sys.executable, "-m", "hublink", "status"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "u-new" in shown.stdout
    assert "u-old" not in shown.stdout
    assert "last backup" not in shown.stdout


async def test_the_revoked_user_list_keeps_the_latest_and_says_how_many_were_dropped(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud, hub_id = hub_settings.cloud, hub_settings.hub_id
    daemon = await spawn(env={"HUBLINK_NOTICES__MAX_REVOKED_USERS": "5"})
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    for n in range(40):
        assert await cloud.push(hub_id, revocation(f"u{n:02}"))
    status = await daemon.wait_status(lambda s: s["revoked_users_dropped"] == 35)
    assert [u["user_id"] for u in status["revoked_users"]] == [f"u{n}" for n in range(35, 40)]
    assert "revoked users: 5 (the latest; 35 older ones not kept)" in summary_lines(status)
