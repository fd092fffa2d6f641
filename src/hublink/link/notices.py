"""What the Cloud told this hub, kept across restarts: ``{state_dir}/state.sqlite3``.

It records pending plugin updates (one per plugin, the latest wins), revoked
users (one per user, the latest ``notices.max_revoked_users``; a count says how
many older ones were dropped) and the last backup, for ``hublink status``.

Notices belong to a hub: the store remembers which hub they were recorded for,
and a store opened for another hub id (after a re-registration) shows nothing
of the old one; its first write clears the old hub's records.

Writes must be cheap for the event loop (the Cloud may push thousands of
messages): a record is appended to a list of pending operations at once, and
one worker thread writes every pending operation in a single transaction.
On the event loop the write starts :data:`WRITE_DELAY` after the first record
of a batch: waking the writer for every few records made it fight the receive
loop for the GIL, and a burst now costs a handful of transactions.
Reads see the file plus the operations not yet written, so a record shows up
in :meth:`StateStore.snapshot` the moment it was made.

Row-level writes (not a rewritten file) let two processes share the store
without undoing each other: ``hublink send plugin_installed`` clears a
pending update even while the daemon runs.

A file that is not a readable database is reported (logged as an error
naming it) and left alone while only read; the first write moves it aside
to ``state.sqlite3.corrupt-<time>`` and starts afresh (:mod:`hublink.sqlite`,
as for the outbox), so the daemon keeps running and nothing is ever silently
overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from hublink import sqlite
from hublink.config import DEFAULT_NOTICES_MAX_REVOKED_USERS
from hublink.link.messages import (
    BackupCompleted,
    BackupFailed,
    OutboundEvent,
    PluginInstalled,
    PluginUpdateAvailable,
    UserRevoked,
)
from hublink.link.records import (
    OWNER,
    SCHEMA,
    LastBackup,
    Notices,
    Op,
    PluginUpdate,
    RevokedUser,
    Rows,
    decode,
    has_table,
    now,
    owner_of,
    prune_revoked,
    render,
)
from hublink.statedir import NOTICES, REPAIR_LOCK, exclusive_lock
from hublink.untrusted import clip

__all__ = ["LastBackup", "Notices", "PluginUpdate", "RevokedUser", "StateStore"]

log = structlog.get_logger(__name__)

#: The longest free text (a revocation's reason) kept for ``hublink status``.
NOTICE_TEXT_CHARS = 1000


#: Seconds a record made on the event loop waits for others to share its
#: transaction (a crash may lose this much more; the Cloud's next message or
#: status poll repeats what matters).
WRITE_DELAY = 0.005


class StateStore:
    """The persistent record of Cloud messages (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        hub_id: str | None = None,
        max_revoked_users: int = DEFAULT_NOTICES_MAX_REVOKED_USERS,
    ) -> None:
        self.path = path
        #: The hub whose notices these are (None: whichever hub recorded them).
        self.hub_id = hub_id
        self.max_revoked_users = max_revoked_users
        self._bound = False
        #: Why the file could not be read, if it could not (shown by ``doctor``/logs).
        self.problem: str | None = None
        self._lock = threading.Lock()  # guards the pending list
        # The reader has its own lock: a snapshot read in a thread must never
        # hold up a record made on the event loop.
        self._read_lock = threading.Lock()
        self._pending: list[Op] = []
        self._flush_scheduled = False
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        self._closed = False

    @classmethod
    def load(
        cls,
        state_dir: Path,
        *,
        hub_id: str | None = None,
        max_revoked_users: int = DEFAULT_NOTICES_MAX_REVOKED_USERS,
    ) -> StateStore:
        """The store in ``state_dir`` for ``hub_id``; reading never creates the file, a write does.

        With a ``hub_id``, notices recorded for another hub are not shown, and
        the first record made through this store clears them from the file.
        """
        store = cls(state_dir / NOTICES, hub_id=hub_id, max_revoked_users=max_revoked_users)
        store._check()
        return store

    def bind_hub(self, hub_id: str) -> None:
        """From now on the notices are ``hub_id``'s: another hub's are cleared (re-registration)."""
        self.hub_id = hub_id
        self._bound = False
        self._submit(Op("hub", "owner"))

    # --- recording ------------------------------------------------------------

    def record_plugin_update(self, msg: PluginUpdateAvailable) -> None:
        """Remember an available update; a later one for the same plugin replaces it."""
        value = {
            "plugin_id": msg.plugin_id,
            "current_version": msg.current_version,
            "new_version": msg.new_version,
            "download_url": msg.download_url,
            "received_at": now(),
        }
        self._submit(Op("plugin_update", msg.plugin_id, value))

    def record_user_revoked(self, msg: UserRevoked) -> None:
        """Remember that the Cloud revoked a user."""
        value = {
            "user_id": msg.user_id,
            "email": msg.email,
            # Free text from the Cloud, shown in status and on the page: kept readable.
            # The hook still gets the whole message.
            "reason": None if msg.reason is None else clip(msg.reason, NOTICE_TEXT_CHARS),
            "received_at": now(),
        }
        self._submit(Op("revoked_user", msg.user_id, value))

    def record_backup(self, result: BackupCompleted | BackupFailed) -> None:
        """Remember how the last backup went."""
        value: dict[str, Any] = {
            "at": now(),
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
            self._submit(Op("last_backup", "completed", value))
        else:
            value["error"] = result.error
        self._submit(Op("last_backup", "last", value))

    def record_outbound(self, event: OutboundEvent) -> None:
        """Note an event queued for the Cloud: ``plugin_installed`` clears the matching update."""
        if isinstance(event, PluginInstalled):
            self._submit(Op("plugin_update", event.plugin_id, installed_version=event.version))

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
        if self.hub_id is not None and owner_of(rows.get(OWNER)) not in (None, self.hub_id):
            rows = {}  # recorded for a hub this one replaced
        return render(rows, self.max_revoked_users)

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

    def _submit(self, op: Op) -> None:
        with self._lock:
            if self._closed:
                log.error("state store closed; record dropped", kind=op.kind, key=op.key)
                return
            if self.hub_id is not None and not self._bound:
                # Every write says whose notices it makes: the first one claims the file.
                self._bound = True
                self._pending.append(Op("hub", "owner", {"hub_id": self.hub_id}))
            if op.kind != "hub":
                self._pending.append(op)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        try:
            asyncio.get_running_loop().call_later(WRITE_DELAY, self._start_flush)
        except RuntimeError:  # no loop in this thread (the CLI, a worker): write now
            self._start_flush()

    def _start_flush(self) -> None:
        try:
            future: Future[None] = self._executor.submit(self._flush)
        except RuntimeError:
            return  # close() shut the writer down after writing what was pending
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

    def _write_batch(self, batch: list[Op]) -> None:
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
            if any(op.kind == "revoked_user" for op in batch):
                prune_revoked(conn, self.max_revoked_users)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            if self.problem is not None:
                self._quarantine()
            self._writer = sqlite.connect(
                self.path, create=True, synchronous="NORMAL", schema=SCHEMA
            )
        return self._writer

    def _quarantine(self) -> None:
        assert self.problem is not None
        # Under the lock, and checked again: another process may have replaced it already.
        with exclusive_lock(self.path.parent / REPAIR_LOCK):
            try:
                with contextlib.closing(sqlite.connect(self.path, create=False)) as conn:
                    if has_table(conn) or self.path.stat().st_size == 0:
                        self.problem = None
            except (sqlite3.Error, OSError):
                pass
            if self.problem is not None:
                sqlite.quarantine(self.path, self.problem, what="state store")
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
            self._reader = sqlite.connect(self.path, create=False)
        if not has_table(self._reader):
            # An empty file is a store cut short before its first write;
            # anything else without our table is somebody else's database.
            if self.path.stat().st_size == 0:
                return {}
            raise sqlite3.DatabaseError("it has no 'records' table")
        found = self._reader.execute("SELECT kind, key, value FROM records").fetchall()
        rows: Rows = {}
        for kind, key, text in found:
            value = decode(text)
            if value is None:
                log.warning("skipping an unreadable state record", kind=kind, key=key)
                continue
            rows[(kind, key)] = value
        return rows


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.error("state store writer failed", error=repr(error))
