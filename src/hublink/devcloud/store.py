"""The reference Cloud's durable state: hubs and stored backups, in SQLite.

Every query is a single tiny statement on a local file, so the calls are
made directly from the event loop; they take microseconds, far below the
heartbeat period they could delay.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubs (
    hub_id       TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    address      TEXT NOT NULL,
    owner_email  TEXT NOT NULL,
    tunnel_port  INTEGER NOT NULL,
    tunnel_token TEXT NOT NULL,
    revoked      INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS backups (
    backup_id    TEXT PRIMARY KEY,
    hub_id       TEXT NOT NULL REFERENCES hubs(hub_id),
    filename     TEXT NOT NULL,
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredHub:
    """A hub as registered; the live part (heartbeats, socket) is kept elsewhere."""

    hub_id: str
    slug: str
    name: str
    address: str
    owner_email: str
    tunnel_port: int
    tunnel_token: str = field(repr=False)
    revoked: bool


@dataclass(frozen=True)
class StoredBackup:
    """One uploaded backup file."""

    backup_id: str
    hub_id: str
    filename: str
    path: Path
    size: int
    sha256: str
    received_at: datetime


class PortsExhaustedError(Exception):
    """Every tunnel port of the configured range is taken."""


class CloudStore:
    """Hubs and backups in ``{data_dir}/devcloud.sqlite3``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def add_hub(
        self,
        *,
        hub_id: str,
        slug: str,
        name: str,
        address: str,
        owner_email: str,
        port_range: tuple[int, int],
        tunnel_token: str,
    ) -> StoredHub:
        """Insert a hub on the lowest free tunnel port.

        Raises:
            PortsExhaustedError: no port of ``port_range`` is free.
        """
        low, high = port_range
        # BEGIN IMMEDIATE: choosing the port and inserting are one step, even
        # if two processes ever share the file.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            taken = {
                row[0] for row in self._db.execute("SELECT tunnel_port FROM hubs WHERE revoked = 0")
            }
            port = next((p for p in range(low, high + 1) if p not in taken), None)
            if port is None:
                raise PortsExhaustedError(f"every tunnel port in {low}-{high} is taken")
            self._db.execute(
                "INSERT INTO hubs (hub_id, slug, name, address, owner_email, tunnel_port,"
                " tunnel_token, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    hub_id,
                    slug,
                    name,
                    address,
                    owner_email,
                    port,
                    tunnel_token,
                    datetime.now(UTC).isoformat(),
                ),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        hub = self.get_hub(hub_id)
        assert hub is not None
        return hub

    def get_hub(self, hub_id: str) -> StoredHub | None:
        """The hub with this id, revoked or not."""
        row = self._db.execute("SELECT * FROM hubs WHERE hub_id = ?", (hub_id,)).fetchone()
        return None if row is None else _hub(row)

    def list_hubs(self) -> list[StoredHub]:
        """Every hub, oldest first."""
        rows = self._db.execute("SELECT * FROM hubs ORDER BY created_at, rowid").fetchall()
        return [_hub(row) for row in rows]

    def slug_exists(self, slug: str) -> bool:
        """Whether a hub already uses ``slug``."""
        return self._db.execute("SELECT 1 FROM hubs WHERE slug = ?", (slug,)).fetchone() is not None

    def revoke(self, hub_id: str) -> bool:
        """Mark the hub revoked; whether it exists."""
        cursor = self._db.execute("UPDATE hubs SET revoked = 1 WHERE hub_id = ?", (hub_id,))
        return cursor.rowcount > 0

    def add_backup(self, backup: StoredBackup) -> None:
        """Record a stored backup file."""
        self._db.execute(
            "INSERT INTO backups (backup_id, hub_id, filename, path, size, sha256, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                backup.backup_id,
                backup.hub_id,
                backup.filename,
                str(backup.path),
                backup.size,
                backup.sha256,
                backup.received_at.isoformat(),
            ),
        )

    def list_backups(self, hub_id: str) -> list[StoredBackup]:
        """The hub's backups, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM backups WHERE hub_id = ? ORDER BY received_at, rowid", (hub_id,)
        ).fetchall()
        return [
            StoredBackup(
                backup_id=row["backup_id"],
                hub_id=row["hub_id"],
                filename=row["filename"],
                path=Path(row["path"]),
                size=row["size"],
                sha256=row["sha256"],
                received_at=datetime.fromisoformat(row["received_at"]),
            )
            for row in rows
        ]


def _hub(row: sqlite3.Row) -> StoredHub:
    return StoredHub(
        hub_id=row["hub_id"],
        slug=row["slug"],
        name=row["name"],
        address=row["address"],
        owner_email=row["owner_email"],
        tunnel_port=row["tunnel_port"],
        tunnel_token=row["tunnel_token"],
        revoked=bool(row["revoked"]),
    )
