"""The rows of the notices store (:mod:`hublink.link.notices`) and how each change applies.

A record is ``(kind, key) → JSON object``. An :class:`Op` is one change,
applied either to the database inside the writer's transaction
(:meth:`Op.write`) or to an in-memory copy of the rows, so that a snapshot
shows records not written yet (:meth:`Op.apply`); :func:`render` turns rows
into the :class:`Notices` that ``hublink status`` shows.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

from hublink.clock import iso_z, utc_now


class PluginUpdate(TypedDict):
    """A ``plugin_update_available`` the Cloud sent and the Hub has not installed yet."""

    plugin_id: str
    current_version: str
    new_version: str
    download_url: str
    received_at: str


class RevokedUser(TypedDict):
    """A ``user_revoked`` the Cloud sent."""

    user_id: str
    email: str
    reason: str
    received_at: str


class LastBackup(TypedDict):
    """How the last backup went (``result`` is ``completed`` or ``failed``)."""

    at: str
    result: str
    size: int | None
    backup_id: str | None
    filename: str | None
    error: str | None
    requested_by: str | None


class Notices(TypedDict):
    """What the Cloud told us, as ``hublink status`` shows it."""

    plugin_updates: list[PluginUpdate]
    revoked_users: list[RevokedUser]
    #: Older revocations no longer listed (``notices.max_revoked_users``).
    revoked_users_dropped: int
    last_backup: LastBackup | None
    #: The last backup that completed, even when a failure came after it (for the metrics).
    last_completed_backup: LastBackup | None


Kind = Literal["plugin_update", "revoked_user", "last_backup", "hub", "counter"]
Rows = dict[tuple[str, str], dict[str, Any]]
#: The record naming the hub the others belong to: ``{"hub_id": …}``.
OWNER = ("hub", "owner")
#: How many revocations were dropped from the list: ``{"n": …}``.
DROPPED = ("counter", "revoked_users_dropped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""


def now() -> str:
    """The time a record is made, ISO-8601 Z with microseconds."""
    # Microseconds kept: revocations are listed in the order they arrived.
    return iso_z(utc_now(), precise=True)


@dataclass(frozen=True, slots=True)
class Op:
    """Set (kind, key) to ``value`` (None: delete), or clear an update once installed."""

    kind: Kind
    key: str
    value: dict[str, Any] | None = None
    installed_version: str | None = None

    def apply(self, rows: Rows) -> None:
        """Apply to an in-memory copy of the table."""
        target = (self.kind, self.key)
        if target == OWNER:
            if owner_of(rows.get(OWNER)) not in (None, owner_of(self.value)):
                rows.clear()  # another hub's notices: they are not this hub's news
            rows[OWNER] = self.value or {}
        elif self.installed_version is not None:
            current = rows.get(target)
            if current is not None and _supersedes(self.installed_version, current):
                del rows[target]
        elif self.value is None:
            rows.pop(target, None)
        else:
            rows[target] = self.value

    def write(self, conn: sqlite3.Connection) -> None:
        """Apply to the database, inside the caller's transaction."""
        if (self.kind, self.key) == OWNER:
            found = conn.execute(
                "SELECT value FROM records WHERE kind = ? AND key = ?", OWNER
            ).fetchone()
            if owner_of(decode(found[0]) if found else None) not in (None, owner_of(self.value)):
                conn.execute("DELETE FROM records")
        if self.installed_version is not None:
            found = conn.execute(
                "SELECT value FROM records WHERE kind = ? AND key = ?", (self.kind, self.key)
            ).fetchone()
            current = decode(found[0]) if found else None
            if current is None or not _supersedes(self.installed_version, current):
                return
        if self.value is None or self.installed_version is not None:
            conn.execute("DELETE FROM records WHERE kind = ? AND key = ?", (self.kind, self.key))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                (self.kind, self.key, json.dumps(self.value)),
            )


_NUMERIC = re.compile(r"^v?(\d+(?:\.\d+)*)$")


def _supersedes(installed: str, update: dict[str, Any]) -> bool:
    """Whether installing version ``installed`` makes the pending ``update`` moot."""
    wanted = str(update.get("new_version", ""))
    if installed == wanted:
        return True
    # Plain dotted numbers compare numerically (2.10 > 2.9); anything fancier
    # (1.0rc1, dates) clears the update only on an exact match.
    a, b = _NUMERIC.match(installed), _NUMERIC.match(wanted)
    if a and b:
        return tuple(map(int, a[1].split("."))) >= tuple(map(int, b[1].split(".")))
    return False


def owner_of(value: dict[str, Any] | None) -> str | None:
    """The hub id an owner record names (None: no owner record)."""
    return None if value is None else str(value.get("hub_id"))


def prune_revoked(conn: sqlite3.Connection, keep: int) -> None:
    """Delete all but the ``keep`` latest revocations, counting the dropped ones."""
    old = conn.execute(
        "SELECT key FROM records WHERE kind = 'revoked_user' "
        "ORDER BY json_extract(value, '$.received_at') DESC, key DESC LIMIT -1 OFFSET ?",
        (keep,),
    ).fetchall()
    if not old:
        return
    conn.executemany("DELETE FROM records WHERE kind = 'revoked_user' AND key = ?", old)
    found = conn.execute("SELECT value FROM records WHERE kind = ? AND key = ?", DROPPED).fetchone()
    dropped = int((decode(found[0]) or {}).get("n", 0)) if found else 0
    conn.execute(
        "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
        (*DROPPED, json.dumps({"n": dropped + len(old)})),
    )


def decode(text: str) -> dict[str, Any] | None:
    """A stored value as a dict, or None when it is not a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def has_table(conn: sqlite3.Connection) -> bool:
    """Whether the database has the notices' ``records`` table."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchone()
    return found is not None


def render(rows: Rows, max_revoked: int) -> Notices:
    """The notices ``hublink status`` shows, the latest ``max_revoked`` revocations only."""
    # The rows were written by record_* above from validated messages; a row of
    # an older version that lacks a key still renders (readers use .get for extras).
    updates = [v for (kind, _), v in rows.items() if kind == "plugin_update"]
    revoked = [v for (kind, _), v in rows.items() if kind == "revoked_user"]
    revoked.sort(key=lambda v: (str(v.get("received_at")), str(v.get("user_id"))))
    # Records not yet written are not pruned yet: cut them the way the writer will.
    dropped = int(rows.get(DROPPED, {}).get("n", 0)) + max(0, len(revoked) - max_revoked)
    revoked = revoked[-max_revoked:]
    last = rows.get(("last_backup", "last"))
    # A store written before "completed" was kept apart knows it only as the last one.
    completed = rows.get(("last_backup", "completed"))
    if completed is None and last is not None and last.get("result") == "completed":
        completed = last
    return {
        "plugin_updates": cast(
            list[PluginUpdate], sorted(updates, key=lambda v: str(v.get("plugin_id")))
        ),
        "revoked_users": cast(list[RevokedUser], revoked),
        "revoked_users_dropped": dropped,
        "last_backup": cast("LastBackup | None", last),
        "last_completed_backup": cast("LastBackup | None", completed),
    }
