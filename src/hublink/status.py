"""The status object of ``hublink status --json`` and ``GET /v1/status`` (contract section 5).

A running daemon builds it from its live state; without a daemon the CLI
builds it from the files, and every live field is null: ``daemon`` is
``{"running": false, "pid": null}`` and ``websocket`` and ``tunnel`` keep their
keys with null values (``status["websocket"]["state"] is None``), so readers
index them the same way whether a daemon runs or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hublink import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from hublink.config import Settings
    from hublink.credentials import Credentials
    from hublink.state import LiveState

#: The contract's ``websocket`` object when no daemon runs.
OFFLINE_WEBSOCKET = {
    "state": None,
    "last_heartbeat_at": None,
    "reconnects": None,
    "last_error": None,
    "next_attempt_at": None,
}
#: The contract's ``tunnel`` object when no daemon runs.
OFFLINE_TUNNEL = {"state": None, "pid": None, "restarts": None, "last_error": None}


def build_status(
    settings: Settings,
    creds: Credentials | None,
    *,
    live: LiveState | None,
    pid: int | None,
    pending: int | None,
    snapshot: dict[str, Any],
) -> dict[str, Any]:
    """The status object; ``live`` and ``pid`` are None when no daemon runs."""
    return {
        "registered": creds is not None,
        "hub_id": str(creds.hub_id) if creds else None,
        "slug": creds.slug if creds else None,
        "cloud_url": creds.cloud_url if creds else settings.cloud_url,
        "daemon": {"running": live is not None, "pid": pid if live is not None else None},
        "websocket": live.link_json() if live is not None else dict(OFFLINE_WEBSOCKET),
        "tunnel": live.tunnel_json() if live is not None else dict(OFFLINE_TUNNEL),
        "outbox": {"pending": pending},
        "plugin_updates": list(snapshot.get("plugin_updates", [])),
        "revoked_users": list(snapshot.get("revoked_users", [])),
        "last_backup": snapshot.get("last_backup"),
        "backup": {
            "database": str(settings.backup.database) if settings.backup.database else None,
            "owner_recipients": len(settings.backup.recipients),
        },
        "version": __version__,
        "state_dir": str(settings.state_dir),
    }


def offline_status(settings: Settings) -> dict[str, Any]:
    """The status object from the files alone, for when no daemon answers.

    Raises:
        CredentialsError: the credentials file exists but cannot be used.
    """
    from hublink.credentials import CredentialStore
    from hublink.errors import NotRegisteredError

    try:
        creds: Credentials | None = CredentialStore(settings.state_dir).load()
    except NotRegisteredError:
        creds = None
    status = build_status(
        settings,
        creds,
        live=None,
        pid=None,
        pending=_pending_on_disk(settings),
        snapshot=_snapshot_on_disk(settings),
    )
    holder = daemon_holding_lock(settings.state_dir)
    if holder is not None:
        # A daemon holds the state dir but did not answer on the control socket:
        # it is running (hung, starting or stopping), its live state unknown.
        status["daemon"] = {"running": True, "pid": holder or None, "answering": False}
    return status


#: ``daemon.LOCK_FILENAME``, named again here (a test keeps the two equal):
#: importing the daemon module would double what ``hublink status`` loads.
DAEMON_LOCK_FILENAME = ".daemon.lock"


def daemon_holding_lock(state_dir: Path) -> int | None:
    """The pid of a daemon holding ``state_dir`` (0 if unreadable), or None when none does."""
    import fcntl
    import os

    try:
        fd = os.open(state_dir / DAEMON_LOCK_FILENAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pending_on_disk(settings: Settings) -> int:
    from hublink.outbox import FILENAME, Outbox

    if not (settings.state_dir / FILENAME).exists():
        # Reading status must not create the outbox (or the state dir) as a side effect.
        return 0
    outbox = Outbox.open(settings.state_dir, settings.outbox.max_pending)
    try:
        return outbox.pending()
    finally:
        outbox.close()


def _snapshot_on_disk(settings: Settings) -> dict[str, Any]:
    from hublink.store import StateStore

    store = StateStore.load(settings.state_dir)
    try:
        return store.snapshot()
    finally:
        store.close()


def summary_lines(status: dict[str, Any]) -> list[str]:
    """A short human summary of ``status`` for the terminal."""
    if not status["registered"]:
        lines = ["registered: no (run `hublink register`)"]
    else:
        lines = [f"registered: yes, hub {status['slug']} ({status['hub_id']})"]
    lines.append(f"cloud:      {status['cloud_url']}")
    daemon = status["daemon"]
    if not daemon["running"]:
        lines.append("daemon:     not running")
    elif daemon.get("answering") is False:
        pid = daemon["pid"] or "unknown"
        lines.append(f"daemon:     running (pid {pid}) but not answering on the control socket")
    else:
        lines.append(f"daemon:     running (pid {daemon['pid']})")
        lines.append("link:       " + _describe_link(status["websocket"]))
        lines.append("tunnel:     " + _describe_tunnel(status["tunnel"]))
    lines.append(f"outbox:     {status['outbox']['pending']} event(s) waiting")
    updates = status["plugin_updates"]
    if updates:
        lines.append(f"plugin updates available: {len(updates)}")
        lines += [f"  {_brief(update)}" for update in updates]
    revoked = status["revoked_users"]
    if revoked:
        lines.append(f"revoked users: {len(revoked)}")
        lines += [f"  {_brief(user)}" for user in revoked]
    lines += _backup_lines(status)
    return lines


def _backup_lines(status: dict[str, Any]) -> list[str]:
    last = status.get("last_backup")
    lines = []
    if last:
        what = last.get("filename") or last.get("error") or ""
        lines.append(f"last backup: {last.get('result')} at {last.get('at')} {what}".rstrip())
    backup = status.get("backup") or {}
    if backup.get("database") and not backup.get("owner_recipients"):
        # Imported only when needed: the backup keys bring the age library along.
        from hublink.backup_keys import NO_OWNER_RECIPIENT_REMINDER

        lines.append(f"reminder: {NO_OWNER_RECIPIENT_REMINDER}")
    return lines


def _describe_link(ws: dict[str, Any]) -> str:
    text = str(ws["state"])
    if ws["state"] == "connected" and ws["last_heartbeat_at"]:
        text += f", last heartbeat {ws['last_heartbeat_at']}"
    if ws["reconnects"]:
        text += f", {ws['reconnects']} reconnect(s)"
    if ws["state"] != "connected" and ws["last_error"]:
        text += f"; last error: {ws['last_error']}"
    if ws["next_attempt_at"]:
        text += f"; next attempt {ws['next_attempt_at']}"
    return text


def _describe_tunnel(tunnel: dict[str, Any]) -> str:
    text = str(tunnel["state"])
    if tunnel["pid"]:
        text += f" (frpc pid {tunnel['pid']})"
    if tunnel["restarts"]:
        text += f", {tunnel['restarts']} restart(s)"
    if tunnel["state"] != "running" and tunnel["last_error"]:
        text += f"; last error: {tunnel['last_error']}"
    return text


def _brief(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    keys = ("plugin_id", "current_version", "new_version", "user_id", "email", "reason")
    return ", ".join(f"{key}={item[key]}" for key in keys if item.get(key) is not None)
