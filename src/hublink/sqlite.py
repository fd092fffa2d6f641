"""The one SQLite opener of hublink's state files: ``outbox.sqlite3`` and ``state.sqlite3``.

    connect(path, create=…, synchronous=…, schema=…, owner_table=…)   a connection, busy timeout set
    is_unreadable(err)                                 "this file is not a database we can use"
    quarantine(path, problem, what=…)                  move a bad file aside, loudly
    quarantined(path)                                  the files moved aside so far

Every connection waits :data:`BUSY_TIMEOUT_MS` for another process's write
transaction (``hublink send`` writes while the daemon drains), runs in
autocommit mode (callers issue their own ``BEGIN IMMEDIATE``) and may be used
from any one thread at a time. A file created here is 0600 from its first
instant (:func:`hublink.fsutil.create_private_file`), and so are its ``-wal``
and ``-shm`` companions, which SQLite gives the database's mode.

A file that is not a database (a disk error, a file written over by mistake)
must never stop hublink for good: :func:`quarantine` renames it, with its
companions, to ``NAME.corrupt-<UTC time>`` beside it, logs an error naming
both paths, and the caller starts afresh. Nothing is deleted: what the old
file held can still be inspected or recovered by hand.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from hublink.fsutil import PRIVATE_FILE, create_private_file

log = structlog.get_logger(__name__)

#: How long a writer waits for another process's transaction (ms).
BUSY_TIMEOUT_MS = 15_000
#: The SQLite side files that belong to a database in WAL or rollback mode.
COMPANIONS = ("-wal", "-shm", "-journal")
#: What a quarantined file's name gets: ``outbox.sqlite3.corrupt-20260101T120000Z``.
CORRUPT_SUFFIX = ".corrupt-"

Synchronous = Literal["FULL", "NORMAL"]


def connect(
    path: Path,
    *,
    create: bool,
    synchronous: Synchronous = "FULL",
    schema: str | None = None,
    owner_table: str | None = None,
) -> sqlite3.Connection:
    """Open ``path`` (creating it 0600 when ``create``), with hublink's settings.

    With ``create``, the database is put in WAL mode with ``synchronous``
    (FULL: a commit survives a power cut; NORMAL: it survives a crash) and
    ``schema`` (a script of ``CREATE … IF NOT EXISTS``) is run. With
    ``owner_table``, a database that holds tables but not that one is another
    program's: it is refused as unreadable before anything is written to it.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database
            (:func:`is_unreadable` tells which).
        OSError: the file or its folder cannot be created.
    """
    if create:
        create_private_file(path)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if create:
            if owner_table is not None:
                _check_owner(conn, owner_table)
            # Reading the mode is the first real access: a file that is not a
            # database fails here, before anything was written to it.
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            if schema is not None:
                conn.executescript(schema)
    except BaseException:
        conn.close()
        raise
    if create:
        tighten_modes(path)
    return conn


def _check_owner(conn: sqlite3.Connection, table: str) -> None:
    """Raise :class:`sqlite3.DatabaseError` when the database holds tables, none of them ``table``.

    Found by the fault suite: another program's database in place of the
    outbox got hublink's tables added to it (and its journal mode changed)
    instead of being moved aside.
    """
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if names and table not in names:
        shown = ", ".join(sorted(names)[:3])
        raise sqlite3.DatabaseError(f"it holds another program's tables ({shown}), no {table!r}")


def is_unreadable(err: BaseException) -> bool:
    """Whether ``err`` says the file is not a usable database (rather than busy, full, …).

    SQLite reports both "file is not a database" and "database disk image is
    malformed" as ``SQLITE_NOTADB``/``SQLITE_CORRUPT``, which Python raises as
    :class:`sqlite3.DatabaseError` itself, never as one of its subclasses
    (those are locks, full disks, I/O errors: passing troubles).
    """
    if type(err) is sqlite3.DatabaseError:
        return True
    code = getattr(err, "sqlite_errorname", "")
    return code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def quarantine(path: Path, problem: str, *, what: str) -> Path:
    """Move ``path`` and its side files aside to ``path.corrupt-<time>``; the new name.

    Logged as an error that names ``what`` (``"outbox"``), both paths and the
    problem. The caller holds whatever lock keeps another process from
    quarantining the fresh file that replaces this one.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
    for suffix in ("", *COMPANIONS):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).rename(aside.with_name(aside.name + suffix))
    log.error(
        f"the {what} file could not be read; moved it aside and started a new one",
        path=str(path),
        moved_to=str(aside),
        problem=problem,
        hint="what it held may be recoverable with the sqlite3 tool; delete it once inspected",
    )
    return aside


def quarantined(path: Path) -> list[Path]:
    """The files :func:`quarantine` made from ``path`` so far, oldest first (no side files)."""
    found = path.parent.glob(f"{path.name}{CORRUPT_SUFFIX}*")
    return sorted(p for p in found if not p.name.endswith(COMPANIONS))


def tighten_modes(path: Path) -> None:
    """Make ``path`` and its side files 0600 if something made them looser."""
    # Belt and braces for files made by an older hublink or by hand.
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            candidate = path.with_name(path.name + suffix)
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(PRIVATE_FILE)


def describe(err: BaseException) -> str:
    """A short reason for a failed open or write: ``"database or disk is full"``."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__
