"""The status object (contract section 5) turned into what the status view shows.

The object comes from the daemon and carries text from the Cloud, so every
field is read defensively: a missing key or a wrong type shows as "unknown"
instead of failing the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hublink.web.text import repair_tree


@dataclass(frozen=True)
class Item:
    """One plugin update or revoked user, as a line of text and an optional id."""

    text: str
    plugin_id: str | None = None


@dataclass(frozen=True)
class StatusView:
    """The fields of the status view, all already repaired text."""

    registered: bool
    name: str | None
    slug: str | None
    hub_id: str | None
    daemon_running: bool
    link_state: str | None
    link_down: bool
    last_heartbeat: str | None
    last_error: str | None
    next_attempt: str | None
    tunnel_state: str | None
    tunnel_error: str | None
    outbox_pending: int | None
    last_backup: str | None
    last_backup_failed: bool
    next_backup: str | None
    plugin_updates: list[Item]
    revoked_users: list[Item]


def safe_status(status: Any) -> dict[str, Any]:
    """The status object with every string repaired; an empty object if it is not one."""
    repaired = repair_tree(status)
    return repaired if isinstance(repaired, dict) else {}


def status_view(status: dict[str, Any]) -> StatusView:
    """The view of an already repaired status object."""
    ws = _dict(status.get("websocket"))
    tunnel = _dict(status.get("tunnel"))
    link_state = _text(ws.get("state"))
    down = link_state != "connected"
    backup = _dict(status.get("last_backup"))
    return StatusView(
        registered=status.get("registered") is True,
        name=_text(status.get("name")) or _text(_dict(status.get("hub")).get("name")),
        slug=_text(status.get("slug")),
        hub_id=_text(status.get("hub_id")),
        daemon_running=_dict(status.get("daemon")).get("running") is not False,
        link_state=link_state,
        link_down=down,
        last_heartbeat=_text(ws.get("last_heartbeat_at")),
        last_error=_text(ws.get("last_error")) if down else None,
        next_attempt=_text(ws.get("next_attempt_at")) if down else None,
        tunnel_state=_text(tunnel.get("state")),
        tunnel_error=_text(tunnel.get("last_error")),
        outbox_pending=_count(_dict(status.get("outbox")).get("pending")),
        last_backup=describe_backup(backup),
        last_backup_failed=bool(backup) and backup.get("result") not in ("completed", "ok"),
        next_backup=_text(status.get("next_backup_at")),
        plugin_updates=[_update(item) for item in _list(status.get("plugin_updates"))],
        revoked_users=[_revoked(item) for item in _list(status.get("revoked_users"))],
    )


def describe_backup(backup: dict[str, Any]) -> str | None:
    """``result at time what`` for the last backup, or None when there was none."""
    if not backup:
        return None
    parts = [_text(backup.get(key)) for key in ("result", "at")]
    what = _text(backup.get("filename")) or _text(backup.get("error"))
    return " ".join(part for part in [*parts, what] if part) or None


def _update(item: Any) -> Item:
    data = _dict(item)
    plugin_id = _text(data.get("plugin_id"))
    current, new = _text(data.get("current_version")), _text(data.get("new_version"))
    versions = f"{current} → {new}" if current and new else new or ""
    text = " ".join(part for part in (plugin_id, versions) if part) or _text(item) or "?"
    return Item(text=text, plugin_id=plugin_id)


def _revoked(item: Any) -> Item:
    data = _dict(item)
    fields = (data.get("email") or data.get("user_id"), data.get("reason"))
    text = " — ".join(t for t in (_text(f) for f in fields) if t) or _text(item) or "?"
    return Item(text=text)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
