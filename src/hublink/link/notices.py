"""What the Cloud told this hub, kept across restarts: ``{state_dir}/state.sqlite3``.

It records pending plugin updates (one per plugin, the latest wins), revoked
users (one per user) and the last backup, for ``hublink status``.

Writes must be cheap for the event loop (the Cloud may push thousands of
messages): a record is appended to a list of pending operations at once, and
one worker thread writes every pending operation in a single transaction.
Reads see the file plus the operations not yet written, so a record shows up
in :meth:`StateStore.snapshot` the moment it was made.

Row-level writes (not a rewritten file) let two processes share the store
without undoing each other: ``hublink send plugin_installed`` clears a
pending update even while the daemon runs.

A file that is not a readable database is reported (logged as an error
naming it) and left alone while only read; the first write moves it aside
to ``state.sqlite3.corrupt-<time>`` and starts afresh, so the daemon keeps
running and nothing is ever silently overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import structlog

from hublink.clock import iso_z, utc_now
from hublink.fsutil import create_private_file
from hublink.link.messages import (
    BackupCompleted,
    BackupFailed,
    OutboundEvent,
    PluginInstalled,
    PluginUpdateAvailable,
    UserRevoked,
)
from hublink.statedir import NOTICES

log = structlog.get_logger(__name__)


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
    last_backup: LastBackup | None
    #: The last backup that completed, even when a failure came after it (for the metrics).
    last_completed_backup: LastBackup | None


BUSY_TIMEOUT_MS = 15_000

Kind = Literal["plugin_update", "revoked_user", "last_backup"]
Rows = dict[tuple[str, str], dict[str, Any]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""


def _now() -> str:
    # Microseconds kept: revocations are listed in the order they arrived.
    return iso_z(utc_now(), precise=True)


@dataclass(frozen=True, slots=True)
class _Op:
    """Set (kind, key) to ``value`` (None: delete), or clear an update once installed."""

    kind: Kind
    key: str
    value: dict[str, Any] | None = None
    installed_version: str | None = None

    def apply(self, rows: Rows) -> None:
        """Apply to an in-memory copy of the table."""
        target = (self.kind, self.key)
        if self.installed_version is not None:
            current = rows.get(target)
            if current is not None and _supersedes(self.installed_version, current):
                del rows[target]
        elif self.value is None:
            rows.pop(target, None)
        else:
            rows[target] = self.value

    def write(self, conn: sqlite3.Connection) -> None:
        """Apply to the database, inside the caller's transaction."""
        if self.installed_version is not None:
            found = conn.execute(
                "SELECT value FROM records WHERE kind = ? AND key = ?", (self.kind, self.key)
            ).fetchone()
            current = _decode(found[0]) if found else None
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


def _decode(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class StateStore:
    """The persistent record of Cloud messages (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Why the file could not be read, if it could not (shown by ``doctor``/logs).
        self.problem: str | None = None
        self._lock = threading.Lock()  # guards the pending list
        # The reader has its own lock: a snapshot read in a thread must never
        # hold up a record made on the event loop.
        self._read_lock = threading.Lock()
        self._pending: list[_Op] = []
        self._flush_scheduled = False
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        self._closed = False

    @classmethod
    def load(cls, state_dir: Path) -> StateStore:
        """The store in ``state_dir``; reading never creates the file, a write does."""
        store = cls(state_dir / NOTICES)
        store._check()
        return store

    # --- recording ------------------------------------------------------------

    def record_plugin_update(self, msg: PluginUpdateAvailable) -> None:
        """Remember an available update; a later one for the same plugin replaces it."""
        value = {
            "plugin_id": msg.plugin_id,
            "current_version": msg.current_version,
            "new_version": msg.new_version,
            "download_url": msg.download_url,
            "received_at": _now(),
        }
        self._submit(_Op("plugin_update", msg.plugin_id, value))

    def record_user_revoked(self, msg: UserRevoked) -> None:
        """Remember that the Cloud revoked a user."""
        value = {
            "user_id": msg.user_id,
            "email": msg.email,
            "reason": msg.reason,
            "received_at": _now(),
        }
        self._submit(_Op("revoked_user", msg.user_id, value))

    def record_backup(self, result: BackupCompleted | BackupFailed) -> None:
        """Remember how the last backup went."""
        value: dict[str, Any] = {
            "at": _now(),
            "result": "failed",
            "size": None,
            "backup_id": None,
            "filename": None,
            "error": None,
            "requested_by": result.requested_by,
        }
        if isinstance(result, BackupCompleted):
            value.update(
                result="completed",
                size=result.size,
                backup_id=result.backup_id,
                filename=result.filename,
            )
            # Kept apart as well: the last success must survive a later failure, so that
            # hublink_last_backup_timestamp_seconds shows an overdue backup after a restart.
            self._submit(_Op("last_backup", "completed", value))
        else:
            value["error"] = result.error
        self._submit(_Op("last_backup", "last", value))

    def record_outbound(self, event: OutboundEvent) -> None:
        """Note an event queued for the Cloud: ``plugin_installed`` clears the matching update."""
        if isinstance(event, PluginInstalled):
            self._submit(_Op("plugin_update", event.plugin_id, installed_version=event.version))

    # --- reading --------------------------------------------------------------

    def snapshot(self) -> Notices:
        """``plugin_updates``, ``revoked_users`` and ``last_backup`` for ``hublink status``.

        Reads a small local table: fast, but it is file I/O; from the event
        loop prefer :meth:`asnapshot`.
        """
        # Under the read lock the writer cannot drop what it just committed
        # from the pending list between our read and our copy of that list.
        with self._read_lock:
            rows = self._read_rows()
            with self._lock:
                pending = list(self._pending)
        for op in pending:
            op.apply(rows)
        return _render(rows)

    async def asnapshot(self) -> Notices:
        """:meth:`snapshot` in a thread, for the event loop."""
        return await asyncio.to_thread(self.snapshot)

    # --- lifecycle ------------------------------------------------------------

    def flush(self) -> None:
        """Block until every record made so far is written."""
        if not self._closed:
            self._executor.submit(self._flush).result()

    def close(self) -> None:
        """Write what is pending, then close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._flush)
        self._executor.shutdown(wait=True)
        with self._read_lock:
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None

    async def aclose(self) -> None:
        """:meth:`close` in a thread, for the event loop."""
        await asyncio.to_thread(self.close)

    # --- internals ------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        with self._lock:
            if self._closed:
                log.error("state store closed; record dropped", kind=op.kind, key=op.key)
                return
            self._pending.append(op)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        future: Future[None] = self._executor.submit(self._flush)
        future.add_done_callback(_log_failure)

    def _flush(self) -> None:
        # Everything pending goes in one transaction: a burst of 10000
        # messages costs a handful of commits, not 10000.
        with self._lock:
            batch = list(self._pending)
            self._flush_scheduled = False
        if not batch:
            return
        try:
            self._write_batch(batch)
        except (OSError, sqlite3.Error) as err:
            # Kept pending: status still shows them, and the next record retries.
            log.error("cannot write the state store", path=str(self.path), error=str(err))
            return
        with self._read_lock, self._lock:
            del self._pending[: len(batch)]

    def _write_batch(self, batch: list[_Op]) -> None:
        only_clears = all(op.installed_version is not None for op in batch)
        if only_clears and self._writer is None and not self.path.exists():
            # Nothing recorded yet, so nothing to clear: `hublink send` on a
            # fresh hub does not need to create the file.
            return
        conn = self._writer_conn()
        # IMMEDIATE: a conditional clear reads then deletes; no other process may write between.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                op.write(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            if self.problem is not None:
                self._quarantine()
            self._writer = _connect(self.path, create=True)
        return self._writer

    def _quarantine(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).rename(
                    aside.with_name(aside.name + suffix)
                )
        log.error(
            "moved the unreadable state store aside and started a new one",
            path=str(self.path),
            moved_to=str(aside),
            problem=self.problem,
        )
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self.problem = None

    def _check(self) -> None:
        try:
            with self._read_lock:
                self._read_db()
        except (sqlite3.Error, OSError) as err:
            self.problem = f"{err} (not a hublink state database?)"
            log.error(
                "the state store cannot be read; pending updates and revocations are not shown",
                path=str(self.path),
                problem=self.problem,
                hint="it is moved aside at the next write; inspect or delete it",
            )

    def _read_rows(self) -> Rows:
        if self.problem is not None:
            return {}
        try:
            return self._read_db()
        except sqlite3.Error as err:
            log.error("cannot read the state store", path=str(self.path), error=str(err))
            return {}

    def _read_db(self) -> Rows:
        # The caller holds the read lock.
        if self._reader is None:
            if not self.path.exists():
                return {}
            self._reader = _connect(self.path, create=False)
        if not _has_table(self._reader):
            # An empty file is a store cut short before its first write;
            # anything else without our table is somebody else's database.
            if self.path.stat().st_size == 0:
                return {}
            raise sqlite3.DatabaseError("it has no 'records' table")
        found = self._reader.execute("SELECT kind, key, value FROM records").fetchall()
        rows: Rows = {}
        for kind, key, text in found:
            value = _decode(text)
            if value is None:
                log.warning("skipping an unreadable state record", kind=kind, key=key)
                continue
            rows[(kind, key)] = value
        return rows


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if create:
        create_private_file(path)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if create:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL: a power cut may lose the last records; a crash loses none.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _has_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchone()
    return found is not None


def _render(rows: Rows) -> Notices:
    # The rows were written by record_* above from validated messages; a row of
    # an older version that lacks a key still renders (readers use .get for extras).
    updates = [v for (kind, _), v in rows.items() if kind == "plugin_update"]
    revoked = [v for (kind, _), v in rows.items() if kind == "revoked_user"]
    last = rows.get(("last_backup", "last"))
    # A store written before "completed" was kept apart knows it only as the last one.
    completed = rows.get(("last_backup", "completed"))
    if completed is None and last is not None and last.get("result") == "completed":
        completed = last
    return {
        "plugin_updates": cast(
            list[PluginUpdate], sorted(updates, key=lambda v: str(v.get("plugin_id")))
        ),
        "revoked_users": cast(
            list[RevokedUser],
            sorted(revoked, key=lambda v: (str(v.get("received_at")), str(v.get("user_id")))),
        ),
        "last_backup": cast("LastBackup | None", last),
        "last_completed_backup": cast("LastBackup | None", completed),
    }


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.error("state store writer failed", error=repr(error))
