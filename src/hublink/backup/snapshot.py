"""A consistent snapshot of the Hub's SQLite database, taken while the Hub keeps writing.

Contract section 7. Why one step and not a stepped online backup (as issue 5
first asked): SQLite's backup API copying a few pages at a time restarts from
the beginning whenever another connection writes to the database between two
steps, so on a busy Hub it never finishes. Copying every page in ONE step
inside one read transaction gives a consistent snapshot of the moment that
transaction began. In WAL mode the Hub's writers carry on meanwhile; in
rollback-journal mode they wait only while the pages are copied (a plain
file copy, much faster than the compression that follows). A database that
another connection keeps locked fails after a bounded wait, with a clear error.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from hublink.errors import BackupCancelled, BackupError, ConfigError

#: How long a snapshot waits for a database locked by another connection
#: before it gives up with a clear error.
DEFAULT_LOCK_TIMEOUT = 30.0


class Abort:
    """Lets the event loop stop a backup that runs in a worker thread.

    Cancelling the coroutine that waits for a worker thread leaves the thread
    running; this flag makes the thread stop at its next chunk instead of
    finishing a long backup nobody waits for (which would also hold up the
    daemon's shutdown).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def set(self) -> None:
        """Ask the running backup to stop."""
        with self._lock:
            self._event.set()
            if self._connection is not None:
                self._connection.interrupt()

    def check(self) -> None:
        """Raise :class:`BackupCancelled` once :meth:`set` was called."""
        if self._event.is_set():
            raise BackupCancelled("the backup was cancelled")

    @contextlib.contextmanager
    def watching(self, connection: sqlite3.Connection) -> Iterator[None]:
        """Interrupt ``connection`` if the backup is stopped while it is in use."""
        with self._lock:
            self.check()
            self._connection = connection
        try:
            yield
        finally:
            with self._lock:
                self._connection = None


def database_path(database: Path | None) -> Path:
    """The configured database, which must exist and be a regular file.

    Raises:
        ConfigError: ``backup.database`` is not set.
        BackupError: the file is missing or not a regular file.
    """
    if database is None:
        raise ConfigError(
            "backup.database is not set: hublink does not know which database to back up",
            hint="set backup.database to the Hub's SQLite file in the config",
        )
    if not database.exists():
        raise BackupError(
            f"the database {database} does not exist",
            hint="check backup.database in the config",
        )
    if not database.is_file():
        raise BackupError(f"the database {database} is not a regular file")
    return database


def database_bytes(database: Path) -> int:
    """The most a snapshot can occupy: the file plus its write-ahead log."""
    wal = database.with_name(database.name + "-wal")
    return database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def take_snapshot(database: Path, dest: Path, *, lock_timeout: float, abort: Abort) -> None:
    """Copy a consistent snapshot of ``database`` into the (empty) file ``dest``.

    Raises:
        BackupError: the database is not SQLite, stays locked longer than
            ``lock_timeout``, cannot be read, or the disk fills up.
    """
    # mode=ro: a backup must never create, migrate or write the Hub's database.
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        source = sqlite3.connect(uri, uri=True, timeout=lock_timeout, isolation_level=None)
    except sqlite3.Error as err:
        raise _snapshot_error(err, database, lock_timeout) from None
    try:
        with abort.watching(source):
            _begin_read(source, database, lock_timeout)
            _copy_all_pages(source, dest, database, lock_timeout)
    finally:
        source.close()


def _begin_read(source: sqlite3.Connection, database: Path, lock_timeout: float) -> None:
    # The first read inside BEGIN takes the shared lock (waiting up to the busy
    # timeout) and pins the snapshot: rows committed before this point are in
    # the backup, later ones are not.
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as err:
        raise _snapshot_error(err, database, lock_timeout) from None


def _copy_all_pages(
    source: sqlite3.Connection, dest: Path, database: Path, lock_timeout: float
) -> None:
    target = sqlite3.connect(dest, isolation_level=None)
    try:
        # A fresh private file needs no rollback journal: on a crash it is
        # thrown away anyway. That also keeps stray -journal files out of state_dir.
        target.execute("PRAGMA journal_mode=OFF")
        target.execute("PRAGMA synchronous=OFF")
        source.backup(target, pages=-1)  # -1: every page in ONE step (see module docstring)
    except sqlite3.Error as err:
        raise _snapshot_error(err, database, lock_timeout) from None
    finally:
        target.close()


def _snapshot_error(err: sqlite3.Error, database: Path, lock_timeout: float) -> BackupError:
    text = str(err)
    if "locked" in text or "busy" in text:
        return BackupError(
            f"the database {database} stayed locked for more than {lock_timeout:g} s",
            hint="another program holds a long exclusive lock on it; try again later",
        )
    if "not a database" in text:
        return BackupError(f"{database} is not a SQLite database", hint="check backup.database")
    if "disk is full" in text or "disk full" in text:
        return BackupError("the disk filled up while copying the database snapshot")
    if "interrupted" in text:
        return BackupCancelled("the backup was cancelled")
    return BackupError(f"cannot read the database {database}: {text}")
