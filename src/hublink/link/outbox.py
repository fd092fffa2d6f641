"""The durable queue of events waiting for the link: ``{state_dir}/outbox.sqlite3``.

Several processes use it at once (``hublink send`` writes while the daemon
drains), so every write is one short ``BEGIN IMMEDIATE`` transaction and a
busy timeout makes them wait for each other instead of failing. The database
runs in WAL mode with ``synchronous=FULL``: once :meth:`Outbox.put` returns,
the event survives a ``kill -9`` or a power cut.

Events leave in the order they were queued (``seq``, AUTOINCREMENT so a seq
is never reused) and are deleted only when the link acknowledges them
(:meth:`Outbox.ack`), which makes delivery at-least-once.

One bad event never blocks the rest:

* an event larger than ``outbox.max_event_size`` is refused when it is queued
  (:class:`~hublink.errors.EventTooLargeError`), since the Cloud would refuse it;
* every send is counted (:meth:`Outbox.mark_sent`); an event that was sent
  :data:`MAX_DELIVERY_ATTEMPTS` times without being acknowledged (the Cloud
  drops the link each time it reads it) is moved to the ``dead_letters`` table
  (:meth:`Outbox.dead_letter`), shown in ``hublink status``, never deleted.

A file that is not a database at all is moved aside as
``outbox.sqlite3.corrupt-<time>`` and a fresh outbox takes its place
(:mod:`hublink.sqlite`), so a damaged disk block never keeps the daemon down.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog

from hublink import sqlite
from hublink.config import DEFAULT_OUTBOX_MAX_EVENT_SIZE, DEFAULT_OUTBOX_MAX_PENDING
from hublink.errors import EventTooLargeError, OutboxError, OutboxFullError
from hublink.link.events import queue_event
from hublink.link.messages import OutboundEvent
from hublink.statedir import OUTBOX, REPAIR_LOCK, access_denied, exclusive_lock

if TYPE_CHECKING:
    from hublink.config import Settings
    from hublink.link.notices import StateStore

log = structlog.get_logger(__name__)

#: Sends without an acknowledgement after which an event is a dead letter. The
#: link sends an event that was in flight when a link dropped alone, so only
#: the event the Cloud cannot take runs this count up (see hublink.link.connection).
MAX_DELIVERY_ATTEMPTS = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    frame     TEXT    NOT NULL,
    queued_at REAL    NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq       INTEGER PRIMARY KEY,
    id        TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    frame     TEXT    NOT NULL,
    queued_at REAL    NOT NULL,
    attempts  INTEGER NOT NULL,
    dead_at   REAL    NOT NULL,
    reason    TEXT    NOT NULL
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
#: Queue one event unless its id is queued already or max_pending are waiting.
_PUT = """
INSERT INTO events (id, type, frame, queued_at)
SELECT ?, ?, ?, ?
WHERE NOT EXISTS (SELECT 1 FROM events WHERE id = ?) AND (SELECT n FROM pending) < ?
"""

_SEED_PENDING = """
INSERT INTO pending (one, n)
SELECT 1, (SELECT count(*) FROM events) WHERE NOT EXISTS (SELECT 1 FROM pending)
"""

#: Outboxes made before events counted their sends get the column (the
#: ALTER runs once, when the column is missing).
_ADD_ATTEMPTS = "ALTER TABLE events ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued event: its position, its id, its type, the JSON text to send, sends so far."""

    seq: int
    id: str
    type: str
    frame: str
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """What ``hublink status`` shows of the outbox (contract section 5, ``outbox``)."""

    #: Events waiting to be sent.
    pending: int
    #: Events the Cloud kept refusing, set aside (:data:`MAX_DELIVERY_ATTEMPTS`).
    dead_letters: int
    #: Unreadable outbox files moved aside (``outbox.sqlite3.corrupt-*``), still on disk.
    quarantined: int


class Outbox:
    """The outbox, used synchronously (the CLI) or through :class:`AsyncOutbox` (the daemon).

    One connection, guarded by a lock, so it may be used from any one thread at a time.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        max_pending: int,
        max_event_size: int = DEFAULT_OUTBOX_MAX_EVENT_SIZE,
    ) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        self.max_pending = max_pending
        self.max_event_size = max_event_size

    @classmethod
    def open(
        cls,
        state_dir: Path,
        max_pending: int = DEFAULT_OUTBOX_MAX_PENDING,
        *,
        max_event_size: int = DEFAULT_OUTBOX_MAX_EVENT_SIZE,
        repair: bool = True,
    ) -> Outbox:
        """Open (creating it 0600 if needed) the outbox in ``state_dir``.

        With ``repair`` (the default), a file that is not a database is moved
        aside and replaced by an empty outbox (:func:`hublink.sqlite.quarantine`);
        without it (a read-only look, ``hublink status``) that is an error.

        Raises:
            StateDirAccessError: the state dir belongs to another user.
            OutboxError: the folder or the database cannot be created or opened.
        """
        path = state_dir / OUTBOX
        try:
            try:
                conn = _connect(path)
            except sqlite3.Error as err:
                if not (repair and sqlite.is_unreadable(err)):
                    raise
                conn = _replace_unreadable(path, err)
        except PermissionError:
            # The state dir of another user: sudo -u hublink was forgotten (exit 78).
            raise access_denied(path, state_dir) from None
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(
                f"cannot open the outbox {path}: {sqlite.describe(err)}",
                hint="check that state_dir exists and belongs to the user running hublink",
            ) from None
        return cls(conn, path, max_pending, max_event_size)

    @classmethod
    def for_settings(cls, settings: Settings, *, repair: bool = True) -> Outbox:
        """:meth:`open` with the ``[outbox]`` settings."""
        return cls.open(
            settings.state_dir,
            settings.outbox.max_pending,
            max_event_size=settings.outbox.max_event_size,
            repair=repair,
        )

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._conn.close()

    def put(self, event: OutboundEvent) -> str:
        """Queue ``event`` durably and return its id.

        Putting an event whose id is still queued is a no-op, so a caller
        that re-sends after a timeout does not queue it twice.

        Raises:
            EventTooLargeError: its frame is over ``max_event_size`` bytes.
            OutboxFullError: ``max_pending`` events are waiting already.
            OutboxError: the database could not be written (disk full, …).
        """
        event_id = str(event.id)
        frame = event.to_frame()
        row = (event_id, event.type, frame, time.time())
        size = len(frame.encode("utf-8", "surrogatepass"))
        if size > self.max_event_size:
            raise EventTooLargeError(
                f"the {event.type} event is {size} bytes, over outbox.max_event_size = "
                f"{self.max_event_size}; it was NOT queued (the Cloud refuses frames that large)",
                problems=[f"(event): {size} bytes, at most {self.max_event_size} allowed"],
                hint="split it into several smaller events (a user_sync of fewer users each)",
            )
        # One statement, so one implicit transaction: SQLite takes the write
        # lock for it, and the duplicate check, the max_pending check (a
        # counter row kept by triggers: count(*) would cost O(queue depth))
        # and the insert see the same rows. A put is one round trip, the cost
        # of a plain insert.
        with self._lock:
            try:
                added = self._conn.execute(_PUT, (*row, event_id, self.max_pending)).rowcount
                if added:
                    return event_id
                (count,) = self._conn.execute("SELECT n FROM pending").fetchone()
                duplicate = self._conn.execute(
                    "SELECT 1 FROM events WHERE id = ?", (event_id,)
                ).fetchone()
            except sqlite3.Error as err:
                raise _write_error(self.path, err) from None
        if duplicate:
            return event_id
        raise OutboxFullError(
            f"the outbox already holds {count} events (outbox.max_pending = "
            f"{self.max_pending}); the {event.type} event was NOT queued",
            hint="the daemon sends them once the Cloud is reachable: check "
            "`hublink status`, or raise outbox.max_pending; retry later",
        )

    def peek(self, limit: int, after_seq: int = 0) -> list[OutboxItem]:
        """Up to ``limit`` events with ``seq > after_seq``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, type, frame, attempts FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def mark_sent(self, seqs: Sequence[int]) -> None:
        """Count one more send of each event in ``seqs`` (before it goes on the wire).

        Raises:
            OutboxError: the database could not be written (the link sends anyway).
        """
        with self._write() as conn:
            conn.executemany(
                "UPDATE events SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def ack(self, up_to_seq: int) -> None:
        """Delete every event with ``seq <= up_to_seq``: the Cloud has them.

        Raises:
            OutboxError: the database could not be written (disk full, …).
        """
        with self._write() as conn:
            conn.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,))

    def dead_letter(self, seq: int, reason: str) -> None:
        """Move event ``seq`` to the ``dead_letters`` table: it is not sent again.

        Raises:
            OutboxError: the database could not be written.
        """
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters "
                "(seq, id, type, frame, queued_at, attempts, dead_at, reason) "
                "SELECT seq, id, type, frame, queued_at, attempts, ?, ? FROM events WHERE seq = ?",
                (time.time(), reason, seq),
            )
            conn.execute("DELETE FROM events WHERE seq = ?", (seq,))

    def pending(self) -> int:
        """How many events wait to be sent."""
        with self._lock:
            (count,) = self._conn.execute("SELECT n FROM pending").fetchone()
        return int(count)

    def depth(self) -> tuple[int, float | None]:
        """How many events wait, and when the oldest was queued (Unix time; None: none waits).

        Two indexed reads (the counter row, the first ``seq``), for the metrics' scrape.

        Raises:
            sqlite3.Error: the outbox is closed or unreadable.
        """
        with self._lock:
            (count,) = self._conn.execute("SELECT n FROM pending").fetchone()
            first = self._conn.execute(
                "SELECT queued_at FROM events ORDER BY seq LIMIT 1"
            ).fetchone()
        return int(count), (float(first[0]) if first else None)

    def counts(self) -> OutboxCounts:
        """Pending events, dead letters and quarantined files, for ``hublink status``."""
        with self._lock:
            (pending,) = self._conn.execute("SELECT n FROM pending").fetchone()
            (dead,) = self._conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        return OutboxCounts(int(pending), int(dead), len(sqlite.quarantined(self.path)))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so the count checked
        # against max_pending cannot change before the insert.
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise _write_error(self.path, err) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as err:
                # SQLite may have rolled back already (disk full); nothing left to undo then.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise _write_error(self.path, err) from None
                raise


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite.connect(path, create=True, synchronous="FULL", owner_table="events")
    try:
        # One transaction: the triggers and the seeded count see the same rows.
        # BEGIN inside the script: executescript() commits an open transaction first.
        conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA}")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "attempts" not in columns:
            conn.execute(_ADD_ATTEMPTS)
        conn.execute(_SEED_PENDING)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _replace_unreadable(path: Path, err: sqlite3.Error) -> sqlite3.Connection:
    """Quarantine the unreadable outbox at ``path`` and open a fresh one."""
    # Under a lock, and checked again: another process (`hublink send`, the
    # daemon) may have replaced it a moment ago; its fresh outbox must stay.
    with exclusive_lock(path.parent / REPAIR_LOCK):
        try:
            return _connect(path)
        except sqlite3.Error as again:
            if not sqlite.is_unreadable(again):
                raise
        sqlite.quarantine(path, f"{err} (not a hublink outbox?)", what="outbox")
        return _connect(path)


def _write_error(path: Path, err: sqlite3.Error) -> OutboxError:
    reason = sqlite.describe(err)
    hint = None
    if getattr(err, "sqlite_errorname", "") == "SQLITE_FULL":
        hint = f"free some space on the file system of {path.parent}"
    return OutboxError(f"cannot write the outbox {path}: {reason}", hint=hint)


class AsyncOutbox:
    """The outbox for the event loop: every call runs on one worker thread.

    ``wakeup`` is set when an event was put through this object or when the
    control API was poked after a ``hublink send``; the link clears it
    before it drains.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.sync = outbox
        self.wakeup = asyncio.Event()
        self._held: list[str] = []
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

    @classmethod
    async def for_settings(cls, settings: Settings) -> AsyncOutbox:
        """:meth:`Outbox.for_settings` without blocking the loop."""
        return cls(await asyncio.to_thread(Outbox.for_settings, settings))

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

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        """See :meth:`Outbox.mark_sent`."""
        await self._run(self.sync.mark_sent, seqs)

    async def dead_letter(self, seq: int, reason: str) -> None:
        """See :meth:`Outbox.dead_letter`."""
        await self._run(self.sync.dead_letter, seq, reason)

    async def counts(self) -> OutboxCounts:
        """See :meth:`Outbox.counts`."""
        return await self._run(self.sync.counts)

    async def put_or_hold(self, event: OutboundEvent) -> bool:
        """Queue ``event``, or, when the outbox cannot take it, hold it for the open link.

        For answers the Cloud waits for (``backup_failed`` on a full disk): a
        held event is sent by the link's next drain, before the queued ones,
        and kept in memory only, so a daemon that stops first loses it.
        Returns whether the event was queued durably.
        """
        try:
            await self.put(event)
        except (OutboxError, EventTooLargeError) as err:
            log.error(
                "cannot queue the answer; it goes out on the link as soon as it is up "
                "(lost if the daemon stops first)",
                answer=event.type,
                error=err.message,
            )
            self._held.append(event.to_frame())
            self.wakeup.set()
            return False
        return True

    def held(self) -> list[str]:
        """The frames held by :meth:`put_or_hold`, oldest first."""
        return list(self._held)

    def release_held(self, count: int) -> None:
        """Forget the ``count`` oldest held frames: the Cloud has read them."""
        del self._held[:count]

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
