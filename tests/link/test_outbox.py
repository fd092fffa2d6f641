"""The durable outbox: order, acknowledgement, bound, durability, several processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hublink.errors import EventTooLargeError, OutboxError, OutboxFullError
from hublink.link.messages import PluginInstalled, UserSync, validate_event
from hublink.link.outbox import AsyncOutbox, Outbox, OutboxCounts
from support.polling import wait_until


def plugin_event(n: int) -> PluginInstalled:
    return PluginInstalled.model_validate(
        {"plugin_id": f"p{n}", "version": "1.0", "installed_at": "2025-01-01T00:00:00Z"}
    )


def test_events_leave_in_queue_order(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path, max_pending=100)
    ids = [outbox.put(plugin_event(n)) for n in range(5)]
    items = outbox.peek(10)
    assert [item.id for item in items] == ids
    assert [json.loads(item.frame)["plugin_id"] for item in items] == [f"p{n}" for n in range(5)]
    assert [item.seq for item in items] == sorted(item.seq for item in items)
    assert outbox.peek(2, after_seq=items[1].seq) == items[2:4]
    outbox.close()


def test_ack_deletes_up_to_and_including_seq(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path)
    for n in range(5):
        outbox.put(plugin_event(n))
    items = outbox.peek(10)
    outbox.ack(items[2].seq)
    assert outbox.pending() == 2
    assert outbox.peek(10) == items[3:]
    outbox.ack(items[2].seq)  # acknowledging twice changes nothing
    assert outbox.pending() == 2
    outbox.close()


def test_seq_is_never_reused_after_ack(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path)
    outbox.put(plugin_event(1))
    first = outbox.peek(1)[0]
    outbox.ack(first.seq)
    outbox.put(plugin_event(2))
    assert outbox.peek(1, after_seq=0)[0].seq > first.seq
    outbox.close()


def test_putting_the_same_id_twice_queues_it_once(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path)
    event = plugin_event(1)
    assert outbox.put(event) == outbox.put(event) == str(event.id)
    assert outbox.pending() == 1
    outbox.close()


def test_bound_refuses_with_a_clear_error(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path, max_pending=3)
    for n in range(3):
        outbox.put(plugin_event(n))
    with pytest.raises(OutboxFullError) as caught:
        outbox.put(plugin_event(99))
    message = str(caught.value)
    assert "already holds 3 events" in message
    assert "max_pending = 3" in message
    assert "NOT queued" in message
    assert caught.value.hint
    assert outbox.pending() == 3
    outbox.ack(outbox.peek(1)[0].seq)
    outbox.put(plugin_event(99))
    assert outbox.pending() == 3
    outbox.close()


def test_the_bound_counts_an_outbox_made_before_the_pending_counter(tmp_path: Path) -> None:
    # An older hublink kept no counter row: the first open counts what is there.
    conn = sqlite3.connect(tmp_path / "outbox.sqlite3")
    conn.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
        "type TEXT NOT NULL, frame TEXT NOT NULL, queued_at REAL NOT NULL);"
        "INSERT INTO events (id, type, frame, queued_at) VALUES ('a', 't', '{}', 0), "
        "('b', 't', '{}', 0);"
    )
    conn.close()
    outbox = Outbox.open(tmp_path, max_pending=3)
    assert outbox.pending() == 2
    outbox.put(plugin_event(1))
    with pytest.raises(OutboxFullError, match="already holds 3 events"):
        outbox.put(plugin_event(2))
    outbox.close()
    assert Outbox.open(tmp_path, max_pending=3).pending() == 3


def test_the_bound_follows_rows_removed_by_hand(tmp_path: Path) -> None:
    # An operator clearing the queue with the sqlite3 shell frees room at once.
    outbox = Outbox.open(tmp_path, max_pending=2)
    outbox.put(plugin_event(1))
    outbox.put(plugin_event(2))
    conn = sqlite3.connect(tmp_path / "outbox.sqlite3")
    with conn:
        conn.execute("DELETE FROM events")
    conn.close()
    assert outbox.pending() == 0
    outbox.put(plugin_event(3))
    assert outbox.pending() == 1
    outbox.close()


def test_files_are_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    outbox = Outbox.open(state_dir)
    outbox.put(plugin_event(1))
    files = sorted(state_dir.iterdir())
    assert {f.name for f in files} >= {"outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    outbox.close()


def test_loose_existing_file_is_tightened(tmp_path: Path) -> None:
    Outbox.open(tmp_path).close()
    (tmp_path / "outbox.sqlite3").chmod(0o644)
    Outbox.open(tmp_path).close()
    assert stat.S_IMODE((tmp_path / "outbox.sqlite3").stat().st_mode) == 0o600


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    expected = r"cannot open the outbox .*file/sub/outbox\.sqlite3: not a directory"
    with pytest.raises(OutboxError, match=expected):
        Outbox.open(blocker / "sub")


def test_not_a_database_is_a_clear_error_when_only_looking(tmp_path: Path) -> None:
    (tmp_path / "outbox.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match=r"outbox\.sqlite3: file is not a database"):
        Outbox.open(tmp_path, repair=False)
    assert (tmp_path / "outbox.sqlite3").read_bytes() == b"this is not sqlite" * 100


@pytest.mark.parametrize(
    "garbage",
    [os.urandom(4096), b"this is not sqlite" * 100, b"SQLite format 3\x00" + os.urandom(4080)],
    ids=["random", "text", "damaged-header"],
)
def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_takes_its_place(
    tmp_path: Path, garbage: bytes
) -> None:
    # Issue 10 item 24: `head -c 4096 /dev/urandom > outbox.sqlite3` kept the daemon down.
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(garbage)
    with capture_logs() as logs:
        outbox = Outbox.open(tmp_path)
    [aside] = sorted(tmp_path.glob("outbox.sqlite3.corrupt-*[0-9]Z"))
    assert aside.read_bytes() == garbage  # nothing lost: kept for inspection
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert error["moved_to"] == str(aside)
    assert "outbox" in error["event"]
    outbox.put(plugin_event(1))
    assert outbox.counts() == OutboxCounts(pending=1, dead_letters=0, quarantined=1)
    outbox.close()
    # A second start finds a good outbox and moves nothing.
    again = Outbox.open(tmp_path)
    assert again.counts().quarantined == 1
    assert again.pending() == 1
    again.close()


def test_another_programs_database_in_place_of_the_outbox_is_moved_aside_untouched(
    tmp_path: Path,
) -> None:
    # Found by the fault suite: hublink added its tables to it and kept using it.
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO sales (total) VALUES (9.5)")
    db.close()
    before = path.read_bytes()
    with pytest.raises(OutboxError, match=r"another program's tables \(sales\), no 'events'"):
        Outbox.open(tmp_path, repair=False)
    assert path.read_bytes() == before
    outbox = Outbox.open(tmp_path)
    [aside] = sorted(tmp_path.glob("outbox.sqlite3.corrupt-*[0-9]Z"))
    assert aside.read_bytes() == before  # not a byte written, not even its journal mode
    outbox.put(plugin_event(1))
    assert outbox.counts() == OutboxCounts(pending=1, dead_letters=0, quarantined=1)
    outbox.close()


def test_an_empty_file_is_an_outbox_cut_short_not_a_stranger(tmp_path: Path) -> None:
    (tmp_path / "outbox.sqlite3").write_bytes(b"")
    outbox = Outbox.open(tmp_path)
    outbox.put(plugin_event(1))
    assert outbox.counts() == OutboxCounts(pending=1, dead_letters=0, quarantined=0)
    outbox.close()


def test_an_event_over_max_event_size_is_refused_when_queued(tmp_path: Path) -> None:
    # Issue 10 item 10: a 1.84 MB user_sync was accepted, then refused by the Cloud forever.
    users = [
        {"cloud_user_id": f"u{n}", "email": f"cajero{n}@example.com", "last_activity": None}
        for n in range(16000)
    ]
    event = validate_event("user_sync", {"users": users})
    outbox = Outbox.open(tmp_path)
    with pytest.raises(EventTooLargeError) as caught:
        outbox.put(event)
    assert caught.value.exit_code == 2
    assert "over outbox.max_event_size = 1000000" in caught.value.message
    assert caught.value.problems[0].startswith("(event): ")
    assert outbox.pending() == 0
    small = Outbox.open(tmp_path / "small", max_event_size=2048)
    with pytest.raises(EventTooLargeError):
        small.put(validate_event("user_sync", {"users": users[:30]}))
    small.put(validate_event("user_sync", {"users": users[:3]}))
    assert small.pending() == 1
    small.close()
    outbox.close()


def test_an_event_set_aside_leaves_the_queue_and_is_counted(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path)
    ids = [outbox.put(plugin_event(n)) for n in range(3)]
    first, *_ = outbox.peek(10)
    outbox.mark_sent([first.seq])
    outbox.mark_sent([first.seq])
    assert outbox.peek(1)[0].attempts == 2
    outbox.dead_letter(first.seq, "the Cloud drops the link for it")
    assert [item.id for item in outbox.peek(10)] == ids[1:]
    assert outbox.counts() == OutboxCounts(pending=2, dead_letters=1, quarantined=0)
    outbox.close()
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        row = conn.execute("SELECT id, attempts, reason FROM dead_letters").fetchone()
    assert row == (ids[0], 2, "the Cloud drops the link for it")


def test_an_outbox_made_before_sends_were_counted_is_upgraded(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        conn.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,"
            " type TEXT NOT NULL, frame TEXT NOT NULL, queued_at REAL NOT NULL)"
        )
        conn.execute("INSERT INTO events (id, type, frame, queued_at) VALUES ('a', 't', '{}', 0)")
    outbox = Outbox.open(tmp_path)
    [item] = outbox.peek(10)
    assert (item.id, item.attempts) == ("a", 0)
    assert outbox.pending() == 1
    outbox.close()


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


PUT_FOREVER = """
    import sys
    from pathlib import Path
    from hublink.link.messages import PluginInstalled
    from hublink.link.outbox import Outbox
    outbox = Outbox.open(Path(sys.argv[1]))
    n = 0
    while True:
        event = PluginInstalled(plugin_id=f"p{n}", version="1", installed_at="2025-01-01T00:00:00Z")
        print(outbox.put(event), flush=True)
        n += 1
"""


def test_put_survives_sigkill_right_after_it_returns(tmp_path: Path) -> None:
    with subprocess.Popen(
        _python(PUT_FOREVER, str(tmp_path)), stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        confirmed = [proc.stdout.readline().strip() for _ in range(25)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    outbox = Outbox.open(tmp_path)
    stored = [item.id for item in outbox.peek(1000)]
    # Everything it reported is there, in order; a put cut short leaves nothing half-written.
    assert stored[: len(confirmed)] == confirmed
    assert len(stored) - len(confirmed) <= 1
    outbox.close()


WRITER = """
    import sys
    from pathlib import Path
    from hublink.link.messages import PluginInstalled
    from hublink.link.outbox import Outbox
    outbox = Outbox.open(Path(sys.argv[1]))
    for n in range(int(sys.argv[3])):
        outbox.put(PluginInstalled(plugin_id=f"{sys.argv[2]}-{n}", version="1",
                                   installed_at="2025-01-01T00:00:00Z"))
    outbox.close()
"""


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    Outbox.open(tmp_path).close()
    count = 150
    procs = [
        subprocess.Popen(_python(WRITER, str(tmp_path), name, str(count))) for name in ("a", "b")
    ]
    # This process drains meanwhile, as the daemon would.
    outbox = Outbox.open(tmp_path)
    seen: list[str] = []

    def drain() -> bool:
        items = outbox.peek(50)
        seen.extend(json.loads(item.frame)["plugin_id"] for item in items)
        if items:
            outbox.ack(items[-1].seq)
        return len(seen) >= 2 * count

    asyncio.run(wait_until(drain, timeout=45, what="both writers' events"))
    assert [proc.wait(timeout=30) for proc in procs] == [0, 0]
    assert len(seen) == 2 * count
    for name in ("a", "b"):
        assert [s for s in seen if s.startswith(name)] == [f"{name}-{n}" for n in range(count)]
    assert outbox.pending() == 0
    outbox.close()


def test_peek_and_ack_drain_10000_quickly(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path)
    # Fill in one transaction: this test is about draining, not about put's fsync.
    with outbox._write() as conn:
        conn.executemany(
            "INSERT INTO events (id, type, frame, queued_at) VALUES (?, 'user_sync', ?, 0)",
            ((str(n), plugin_event(n).to_frame()) for n in range(10_000)),
        )
    started = time.perf_counter()
    last, total = 0, 0
    while items := outbox.peek(500, after_seq=last):
        total += len(items)
        last = items[-1].seq
        outbox.ack(last)
    elapsed = time.perf_counter() - started
    assert total == 10_000
    assert outbox.pending() == 0
    assert elapsed < 1.0, f"draining 10000 events took {elapsed:.2f}s"
    outbox.close()


async def test_async_outbox_wakes_the_link(tmp_path: Path) -> None:
    outbox = await AsyncOutbox.open(tmp_path, max_pending=10)
    assert not outbox.wakeup.is_set()
    event = validate_event("user_sync", {"users": []})
    assert isinstance(event, UserSync)
    event_id = await outbox.put(event)
    assert outbox.wakeup.is_set()
    assert await outbox.pending() == 1
    items = await outbox.peek(10)
    assert [item.id for item in items] == [event_id]
    await outbox.ack(items[0].seq)
    assert await outbox.pending() == 0
    outbox.wakeup.clear()
    outbox.poke()
    assert outbox.wakeup.is_set()
    await outbox.close()
    await outbox.close()  # idempotent: the daemon may close after a partial startup


async def test_async_outbox_does_not_block_the_loop(tmp_path: Path) -> None:
    outbox = await AsyncOutbox.open(tmp_path)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(outbox.put(plugin_event(n)) for n in range(20)))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ticks > 20
    assert await outbox.pending() == 20
    await outbox.close()
