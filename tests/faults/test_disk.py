"""The state dir's filesystem is full (a small tmpfs filled to the last byte; root only).

Contract: ``POST /v1/events`` answers 503 when an event cannot be queued, so
the Hub application knows (section 8); what was queued is never lost
(section 4: a full disk leaves the old file intact); a ``backup_request`` is
answered with ``backup_completed`` or ``backup_failed`` (section 2).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hublink.config import BackupSettings
from hublink.devcloud import DevCloud
from support.daemon import Daemons
from support.polling import wait_until
from support.reliability import Row
from support.scenario import LinkWatch, Producer, fault_hub, linked, sized, within
from support.smallfs import fill, small_filesystem

pytestmark = [pytest.mark.faults, pytest.mark.timeout(sized(90, 180))]

#: Big enough for the credentials, an outbox and the state file; small enough to fill fast.
STATE_FS_SIZE = "4m"


async def _queue(events: Producer, count: int, pause: float = 0.05) -> int:
    """Queue ``count`` events one after the other; how many the daemon refused."""
    before = events.refused
    for _ in range(count):
        await asyncio.to_thread(events.queue_one)
        await asyncio.sleep(pause)
    return events.refused - before


async def test_a_full_state_dir_refuses_new_events_clearly_and_keeps_the_link(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    with small_filesystem(tmp_path / "hub" / "state", STATE_FS_SIZE) as state:
        hub = fault_hub(devcloud, tmp_path / "hub")
        daemon = await linked(daemons, hub)
        watch = await LinkWatch(daemon).start()
        events = Producer(hub)
        assert await _queue(events, 5) == 0
        assert not await events.settle()
        await daemon.wait_status(lambda s: s["outbox"]["pending"] == 0)
        filler = fill(state)
        full_at = watch.now()
        beats = len(devcloud.heartbeats(hub.hub_id))
        tries = sized(20, 100)
        refused = await _queue(events, tries)
        # The link kept beating while the disk was full.
        assert len(devcloud.heartbeats(hub.hub_id)) > beats
        drops = watch.reconnects(full_at)
        filler.unlink()
        assert await _queue(events, 5) == 0
        missing = await events.settle()
        await watch.stop()
    words = [str(answer) for answer in events.refusals]
    clear = all(a is not None and a[0] == 503 and "full" in a[1]["error"] for a in events.refusals)
    row = Row(
        key="disk/1-full-queue",
        scenario="State dir full while the Hub queues events",
        rule="§8: an event that cannot be queued gets 503 (the caller knows); nothing queued "
        "is lost; the link holds",
        iterations=tries,
        figure=f"{refused} of {tries} refused with 503 naming the full disk, {drops} link drops; "
        f"after space returned {len(missing)} of {len(events.accepted)} queued lost",
        goal="every refusal a 503 naming the disk, 0 drops, 0 lost",
        passed=clear and drops == 0 and not missing,
        data={"refused": refused, "tries": tries, "drops": drops, "lost": len(missing)},
    )
    recorder(row)
    assert refused > 0, "the full disk never refused an event"
    assert clear, words
    assert drops == 0, watch.errors(full_at)
    assert not missing


async def test_a_full_state_dir_while_draining_keeps_the_link_up(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    with small_filesystem(tmp_path / "hub" / "state", STATE_FS_SIZE) as state:
        hub = fault_hub(devcloud, tmp_path / "hub")
        daemon = await linked(daemons, hub)
        watch = await LinkWatch(daemon).start()
        port = devcloud.port
        await devcloud.stop(code=1012)
        await daemon.wait_status(lambda s: s["websocket"]["state"] == "backoff")
        events = Producer(hub)
        queued = 20
        assert await _queue(events, queued, pause=0) == 0
        filler = fill(state)
        back_at = watch.now()
        await devcloud.start(port=port)
        # The batch goes out; removing it from the outbox cannot be written.
        full_for = sized(3.0, 15.0)
        await wait_until(lambda: watch.now() - back_at >= full_for, timeout=full_for + 5)
        states = watch.states(back_at)
        errors = watch.errors(back_at)
        duplicates = events.duplicates()
        filler.unlink()
        missing = await events.settle()
        await daemon.wait_status(lambda s: s["outbox"]["pending"] == 0, timeout=30)
        await watch.stop()
    names_the_disk = any("full" in error for error in errors)
    row = Row(
        key="disk/2-full-drain",
        scenario="State dir full while the outbox drains",
        rule="§2/§4: the link stays up (heartbeats, commands), last_error names the disk, "
        "re-sends bounded, nothing lost",
        iterations=1,
        figure=f"link states {sorted(s or 'no answer' for s in states)}, "
        f"errors {errors or 'none'}, {duplicates} re-sent in {full_for:.0f} s; "
        f"{len(missing)} of {queued} lost",
        goal=f"never 'stopped', an error naming the disk, ≤ {2 * queued} re-sent, 0 lost",
        passed="stopped" not in states and names_the_disk and duplicates <= 2 * queued,
        data={"states": sorted(map(str, states)), "errors": errors, "duplicates": duplicates},
    )
    recorder(row)
    assert not missing
    assert "stopped" not in states, states
    assert names_the_disk, errors
    assert duplicates <= 2 * queued


async def test_a_backup_requested_with_the_state_dir_full_is_answered(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    database = tmp_path / "hub.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
        db.executemany("INSERT INTO sales (total) VALUES (?)", [(i,) for i in range(1000)])
    db.close()
    with small_filesystem(tmp_path / "hub" / "state", STATE_FS_SIZE) as state:
        hub = fault_hub(devcloud, tmp_path / "hub", backup=BackupSettings(database=database))
        await linked(daemons, hub)
        filler = fill(state)
        asked_at = asyncio.get_running_loop().time()
        assert await devcloud.push(hub.hub_id, {"type": "backup_request", "requested_by": "faults"})

        def answer() -> dict[str, Any] | None:
            found = [
                e
                for e in devcloud.events(hub.hub_id)
                if e.get("type") in ("backup_completed", "backup_failed")
            ]
            return found[0] if found else None

        wait = sized(10.0, 30.0)
        got = await within(answer, wait)
        while_full = got is not None
        if got is None:
            filler.unlink()
            got = await within(answer, wait)
        took = asyncio.get_running_loop().time() - asked_at
    row = Row(
        key="disk/3-full-backup",
        scenario="A backup requested while the state dir is full",
        rule="§2: every backup_request is answered (backup_completed or backup_failed)",
        iterations=1,
        figure=(
            f"answered {got['type']} {'while full' if while_full else 'once space returned'}, "
            f"{took:.1f} s after the request ({got.get('error', '')[:70]})"
            if got
            else f"no answer in {took:.0f} s, not even after space returned"
        ),
        goal="a backup_failed naming the disk, at once or once space returns",
        passed=got is not None,
    )
    recorder(row)
    assert got is not None, row.figure
