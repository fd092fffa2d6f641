"""The durable queue of events waiting for the link: ``{state_dir}/outbox.sqlite3``.

Several processes use it at once (``hublink send`` writes while the daemon
drains), so every write is one short ``BEGIN IMMEDIATE`` transaction and a
busy timeout makes them wait for each other instead of failing. The database
runs in WAL mode with ``synchronous=FULL``: once :meth:`Outbox.put` returns,
the event survives a ``kill -9`` or a power cut.

Events leave in the order they were queued (``seq``, AUTOINCREMENT so a seq
is never reused) and are deleted only when the link acknowledges them
(:meth:`Outbox.ack`), which makes delivery at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog

from hublink.config import DEFAULT_OUTBOX_MAX_PENDING
from hublink.errors import OutboxError, OutboxFullError
from hublink.fsutil import PRIVATE_FILE, create_private_file
from hublink.link.events import queue_event
from hublink.link.messages import OutboundEvent
from hublink.statedir import OUTBOX, access_denied

if TYPE_CHECKING:
    from hublink.link.notices import StateStore

log = structlog.get_logger(__name__)

#: How long a writer waits for another process's transaction (ms).
BUSY_TIMEOUT_MS = 15_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    frame     TEXT    NOT NULL,
    queued_at REAL    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (id);
CREATE TABLE IF NOT EXISTS pending (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    n   INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_pending_in AFTER INSERT ON events
BEGIN UPDATE pending SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS events_pending_out AFTER DELETE ON events
BEGIN UPDATE pending SET n = n - 1; END;
"""

#: The count starts from the rows already there (an outbox made by an older
#: hublink); the subquery runs only while the counter row is missing.
_SEED_PENDING = """
INSERT INTO pending (one, n)
SELECT 1, (SELECT count(*) FROM events) WHERE NOT EXISTS (SELECT 1 FROM pending)
"""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued event: its position, its id and the JSON text to send."""

    seq: int
    id: str
    frame: str


class Outbox:
    """The outbox, used synchronously (the CLI) or through :class:`AsyncOutbox` (the daemon).

    One connection, guarded by a lock, so it may be used from any one thread at a time.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, max_pending: int) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        self.max_pending = max_pending

    @classmethod
    def open(cls, state_dir: Path, max_pending: int = DEFAULT_OUTBOX_MAX_PENDING) -> Outbox:
        """Open (creating it 0600 if needed) the outbox in ``state_dir``.

        Raises:
            StateDirAccessError: the state dir belongs to another user.
            OutboxError: the folder or the database cannot be created or opened.
        """
        path = state_dir / OUTBOX
        try:
            conn = _connect(path)
        except PermissionError:
            # The state dir of another user: sudo -u hublink was forgotten (exit 78).
            raise access_denied(path, state_dir) from None
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(
                f"cannot open the outbox {path}: {_reason(err)}",
                hint="check that state_dir exists and belongs to the user running hublink",
            ) from None
        return cls(conn, path, max_pending)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._conn.close()

    def put(self, event: OutboundEvent) -> str:
        """Queue ``event`` durably and return its id.

        Putting an event whose id is still queued is a no-op, so a caller
        that re-sends after a timeout does not queue it twice.

        Raises:
            OutboxFullError: ``max_pending`` events are waiting already.
            OutboxError: the database could not be written (disk full, …).
        """
        event_id = str(event.id)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone():
                return event_id
            # The counter row, kept by triggers in the same transaction as
            # every insert and delete: a count(*) would cost O(queue depth).
            (count,) = conn.execute("SELECT n FROM pending").fetchone()
            if count >= self.max_pending:
                raise OutboxFullError(
                    f"the outbox already holds {count} events (outbox.max_pending = "
                    f"{self.max_pending}); the {event.type} event was NOT queued",
                    hint="the daemon sends them once the Cloud is reachable: check "
                    "`hublink status`, or raise outbox.max_pending; retry later",
                )
            conn.execute(
                "INSERT INTO events (id, type, frame, queued_at) VALUES (?, ?, ?, ?)",
                (event_id, event.type, event.to_frame(), time.time()),
            )
        return event_id

    def peek(self, limit: int, after_seq: int = 0) -> list[OutboxItem]:
        """Up to ``limit`` events with ``seq > after_seq``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [OutboxItem(seq, event_id, frame) for seq, event_id, frame in rows]

    def ack(self, up_to_seq: int) -> None:
        """Delete every event with ``seq <= up_to_seq``: the Cloud has them."""
        with self._write() as conn:
            conn.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,))

    def pending(self) -> int:
        """How many events wait to be sent."""
        with self._lock:
            (count,) = self._conn.execute("SELECT n FROM pending").fetchone()
        return int(count)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so the count checked
        # against max_pending cannot change before the insert.
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise OutboxError(f"cannot write the outbox {self.path}: {_reason(err)}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as err:
                # SQLite may have rolled back already (disk full); nothing left to undo then.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise OutboxError(
                        f"cannot write the outbox {self.path}: {_reason(err)}"
                    ) from None
                raise


def _connect(path: Path) -> sqlite3.Connection:
    create_private_file(path)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsynced at every commit, so put() is durable when it returns.
        conn.execute("PRAGMA synchronous = FULL")
        # One transaction: the triggers and the seeded count see the same rows.
        conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_SEED_PENDING}; COMMIT;")
    except BaseException:
        conn.close()
        raise
    _tighten_modes(path)
    return conn


def _tighten_modes(path: Path) -> None:
    # Belt and braces for files made by an older hublink or by hand.
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            candidate = path.with_name(name)
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(PRIVATE_FILE)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err)


class AsyncOutbox:
    """The outbox for the event loop: every call runs on one worker thread.

    ``wakeup`` is set when an event was put through this object or when the
    control API was poked after a ``hublink send``; the link clears it
    before it drains.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.sync = outbox
        self.wakeup = asyncio.Event()
        # One thread: calls run in submission order and never contend for the lock.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._closed = False

    @classmethod
    async def open(
        cls, state_dir: Path, max_pending: int = DEFAULT_OUTBOX_MAX_PENDING
    ) -> AsyncOutbox:
        """Open the outbox in ``state_dir`` without blocking the loop."""
        outbox = await asyncio.to_thread(Outbox.open, state_dir, max_pending)
        return cls(outbox)

    async def put(self, event: OutboundEvent) -> str:
        """Queue ``event`` durably, wake the link, return the id (see :meth:`Outbox.put`)."""
        event_id = await self._run(self.sync.put, event)
        self.wakeup.set()
        return event_id

    async def queue(self, notices: StateStore, event_type: str, data: object) -> str:
        """:func:`hublink.link.events.queue_event` on the worker thread, then wake the link."""
        event_id = await self._run(queue_event, self.sync, notices, event_type, data)
        self.wakeup.set()
        return event_id

    async def peek(self, limit: int, after_seq: int = 0) -> list[OutboxItem]:
        """See :meth:`Outbox.peek`."""
        return await self._run(self.sync.peek, limit, after_seq)

    async def ack(self, up_to_seq: int) -> None:
        """See :meth:`Outbox.ack`."""
        await self._run(self.sync.ack, up_to_seq)

    async def pending(self) -> int:
        """See :meth:`Outbox.pending`."""
        return await self._run(self.sync.pending)

    def poke(self) -> None:
        """Wake the link: another process queued something."""
        self.wakeup.set()

    async def close(self) -> None:
        """Finish queued calls, then close the database (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._run(self.sync.close)
        self._executor.shutdown(wait=False)

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(func, *args))
