"""The status object of ``hublink status --json`` and ``GET /v1/status`` (contract section 5).

A running daemon builds it from its live state; without a daemon the CLI
builds it from the files, and every live field is null: ``daemon`` is
``{"running": false, "pid": null}`` and ``websocket`` and ``tunnel`` keep their
keys with null values (``status["websocket"]["state"] is None``), so readers
index them the same way whether a daemon runs or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hublink import __version__, statedir
from hublink.clock import iso_z
from hublink.untrusted import printable

if TYPE_CHECKING:
    from datetime import datetime

    from hublink.config import Settings
    from hublink.credentials import Credentials
    from hublink.link.notices import Notices
    from hublink.link.outbox import OutboxCounts
    from hublink.live import LiveState
    from hublink.statusreport import (
        LinkReport,
        OutboxReport,
        StatusReport,
        TunnelReport,
        WebReport,
    )


def offline_link() -> LinkReport:
    """The contract's ``websocket`` object when no daemon runs."""
    return {
        "state": None,
        "last_heartbeat_at": None,
        "reconnects": None,
        "last_error": None,
        "next_attempt_at": None,
    }


def offline_tunnel() -> TunnelReport:
    """The contract's ``tunnel`` object when no daemon runs."""
    return {"state": None, "pid": None, "restarts": None, "last_error": None}


def offline_web(settings: Settings) -> WebReport:
    """The ``web`` object when no daemon serves the page."""
    web = settings.web
    return {"enabled": web.enabled, "listen": web.listen, "url": None, "error": None}


def build_status(
    settings: Settings,
    creds: Credentials | None,
    *,
    live: LiveState | None,
    pid: int | None,
    outbox: OutboxCounts | None,
    snapshot: Notices,
    web: WebReport | None = None,
    next_backup_at: datetime | None = None,
    metrics_error: str | None = None,
) -> StatusReport:
    """The status object; ``live``, ``pid`` and ``web`` are None when no daemon runs.

    ``outbox`` is None when the outbox cannot be read (its counts are then null).
    """
    return {
        "registered": creds is not None,
        "hub_id": str(creds.hub_id) if creds else None,
        "slug": creds.slug if creds else None,
        "name": (creds.name if creds else None) or settings.hub.name or None,
        "cloud_url": creds.cloud_url if creds else settings.cloud_url,
        "daemon": {"running": live is not None, "pid": pid if live is not None else None},
        "websocket": live.link_report() if live is not None else offline_link(),
        "tunnel": live.tunnel_report() if live is not None else offline_tunnel(),
        "outbox": {
            "pending": outbox.pending if outbox else None,
            "dead_letters": outbox.dead_letters if outbox else None,
            "quarantined": outbox.quarantined if outbox else None,
        },
        "plugin_updates": list(snapshot["plugin_updates"]),
        "revoked_users": list(snapshot["revoked_users"]),
        "revoked_users_dropped": snapshot["revoked_users_dropped"],
        "last_backup": snapshot["last_backup"],
        "backup": {
            "database": str(settings.backup.database) if settings.backup.database else None,
            "owner_recipients": len(settings.backup.recipients),
        },
        "next_backup_at": iso_z(next_backup_at),
        "metrics": {"listen": settings.metrics.listen, "error": metrics_error},
        "version": __version__,
        "state_dir": str(settings.state_dir),
        "web": web if web is not None else offline_web(settings),
    }


def offline_status(settings: Settings) -> StatusReport:
    """The status object from the files alone, for when no daemon answers.

    Raises:
        CredentialsError: the credentials file exists but cannot be used.
    """
    # The files' readers load only when no daemon answered (SQLite and the message
    # models weigh on `hublink status`; tests/test_imports.py guards it).
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
        outbox=_outbox_on_disk(settings),
        snapshot=_snapshot_on_disk(settings, str(creds.hub_id) if creds else None),
    )
    holder = statedir.daemon_lock_holder(settings.state_dir)
    if holder is not None:
        # A daemon holds the state dir but did not answer on the control socket:
        # it is running (hung, starting or stopping), its live state unknown.
        status["daemon"] = {"running": True, "pid": holder or None, "answering": False}
    return status


def _outbox_on_disk(settings: Settings) -> OutboxCounts | None:
    # Only without a daemon: see offline_status.
    from hublink import sqlite
    from hublink.errors import OutboxError
    from hublink.link.outbox import Outbox, OutboxCounts

    path = settings.state_dir / statedir.OUTBOX
    if not path.exists():
        # Reading status must not create the outbox (or the state dir) as a side effect.
        return OutboxCounts(0, 0, len(sqlite.quarantined(path)))
    try:
        # A look only: a damaged file is the daemon's to move aside, at its start.
        outbox = Outbox.for_settings(settings, repair=False)
    except OutboxError:
        return None
    try:
        return outbox.counts()
    finally:
        outbox.close()


def _snapshot_on_disk(settings: Settings, hub_id: str | None) -> Notices:
    from hublink.link.notices import StateStore  # only without a daemon: see offline_status

    store = StateStore.load(
        settings.state_dir, hub_id=hub_id, max_revoked_users=settings.notices.max_revoked_users
    )
    try:
        return store.snapshot()
    finally:
        store.close()


def add_setup_url(status: StatusReport) -> None:
    """Add ``web.setup_url``, the page's URL carrying its setup code (contract section 9),
    when a daemon serves the page and this user can read its ``{state_dir}/web-code``."""
    web = status.get("web")
    if not web or not web.get("url"):
        return
    # hublink.web loads lazily: this reads a file, without aiohttp or Jinja2.
    from hublink.web.code import read_code

    code = read_code(Path(status["state_dir"]))
    if code is not None:
        web["setup_url"] = f"{web['url']}?code={code}"


def summary_lines(status: StatusReport) -> list[str]:
    """A short human summary of ``status`` for the terminal, every line printable as UTF-8."""
    return [printable(line) for line in _summary(status)]


def _summary(status: StatusReport) -> list[str]:
    if not status["registered"]:
        page = (status.get("web") or {}).get("url")
        way = "enroll from the page below, or" if page else "run"
        lines = [f"registered: no ({way} `hublink register`)"]
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
        lines += _page_lines(status)
    lines.append("outbox:     " + _describe_outbox(status["outbox"]))
    updates = status["plugin_updates"]
    if updates:
        lines.append(f"plugin updates available: {len(updates)}")
        lines += [f"  {_brief(update)}" for update in updates]
    revoked = status["revoked_users"]
    dropped = status.get("revoked_users_dropped") or 0
    if revoked:
        older = f" (the latest; {dropped} older ones not kept)" if dropped else ""
        lines.append(f"revoked users: {len(revoked)}{older}")
        lines += [f"  {_brief(user)}" for user in revoked]
    lines += _backup_lines(status)
    metrics = status.get("metrics") or {}
    if metrics.get("error"):
        lines.append(f"metrics:    {metrics['error']}")
    return lines


def _page_lines(status: StatusReport) -> list[str]:
    web = status.get("web")
    if not web:
        return []  # a daemon from before the page
    if not web["enabled"]:
        return ["page:       off (web.enabled = false)"]
    if web["error"]:
        return [f"page:       not served: {web['error']}"]
    if web.get("setup_url"):
        return [f"page:       {web['setup_url']}"]
    if web["url"]:
        where = Path(status["state_dir"]) / statedir.WEB_CODE
        return [
            f"page:       {web['url']}",
            f"            its setup code is in {where} (root or hublink: `hublink status` "
            "shows the URL with it)",
        ]
    return []


def _backup_lines(status: StatusReport) -> list[str]:
    last = status.get("last_backup")
    lines = []
    if last:
        what = last.get("filename") or last.get("error") or ""
        lines.append(f"last backup: {last.get('result')} at {last.get('at')} {what}".rstrip())
    if status.get("next_backup_at"):
        lines.append(f"next backup: {status['next_backup_at']} (backup.schedule)")
    backup = status.get("backup") or {}
    if backup.get("database") and not backup.get("owner_recipients"):
        # Imported only when needed: the backup keys bring the age library along.
        from hublink.backup.keys import NO_OWNER_RECIPIENT_REMINDER

        lines.append(f"reminder: {NO_OWNER_RECIPIENT_REMINDER}")
    return lines


def _describe_link(ws: LinkReport) -> str:
    text = str(ws["state"])
    if ws["state"] == "connected" and ws["last_heartbeat_at"]:
        text += f", last heartbeat {ws['last_heartbeat_at']}"
    if ws["reconnects"]:
        text += f", {ws['reconnects']} reconnect(s)"
    # A connected link has an error only when its outbox cannot be written (a full disk).
    if ws["last_error"]:
        text += f"; last error: {ws['last_error']}"
    if ws["next_attempt_at"]:
        text += f"; next attempt {ws['next_attempt_at']}"
    return text


def _describe_outbox(outbox: OutboxReport) -> str:
    if outbox.get("pending") is None:
        return "cannot be read (see `hublink doctor`)"
    text = f"{outbox['pending']} event(s) waiting"
    if outbox.get("dead_letters"):
        text += f"; {outbox['dead_letters']} set aside, the Cloud refused them (dead letters)"
    if outbox.get("quarantined"):
        text += f"; {outbox['quarantined']} damaged outbox file(s) moved aside in the state dir"
    return text


def _describe_tunnel(tunnel: TunnelReport) -> str:
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
