"""A state-dir file is corrupt when the daemon starts.

Contract section 4: a credentials file that cannot be parsed is an error that
names the file, and it is never overwritten (``run`` exits 78, which the unit
does not restart). The state file and the outbox are hublink's own: a corrupt
one is moved aside (``<name>.corrupt-<time>``, a loud error) and the hub links
with a fresh one; nothing is silently overwritten.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hublink.devcloud import DevCloud
from hublink.errors import EXIT_CONFIG
from hublink.link.messages import UserRevoked
from hublink.link.notices import StateStore
from hublink.statedir import CREDENTIALS, NOTICES, OUTBOX
from support.daemon import Daemons
from support.polling import wait_until
from support.reliability import Row
from support.scenario import Producer, fault_hub, linked, sized

pytestmark = [pytest.mark.faults, pytest.mark.timeout(sized(60, 120))]

#: The kinds of damage a power cut, a bad SD card or a careless hand leave behind.
DAMAGE = ("random bytes", "cut in half", "another program's SQLite")


def damage(path: Path, kind: str) -> bytes:
    """Damage ``path`` in one of the :data:`DAMAGE` ways; its new bytes."""
    if kind == "random bytes":
        data = random.Random(13).randbytes(4096)
    elif kind == "cut in half":
        whole = path.read_bytes() if path.exists() else b""
        data = whole[: max(len(whole) // 2, 1)] or b"\x00"
    else:
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE other (x)")
        db.close()
        return path.read_bytes()
    path.write_bytes(data)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return data


@pytest.mark.parametrize("kind", ["random bytes", "cut in half", "wrong fields"])
async def test_corrupt_credentials_stop_the_daemon_with_78_naming_the_file(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any, kind: str
) -> None:
    hub = fault_hub(devcloud, tmp_path / "hub")
    path = hub.settings.state_dir / CREDENTIALS
    if kind == "wrong fields":
        path.write_text('hub_id = "not a uuid"\ntunnel_port = 0\n')
        before = path.read_bytes()
    else:
        before = damage(path, kind)
    started = time.monotonic()
    daemon = await daemons.start(hub)
    code = await daemon.wait_exit(timeout=30)
    took = time.monotonic() - started
    log = daemon.log_text()
    names_it = str(path) in log
    untouched = path.read_bytes() == before
    no_traceback = "Traceback" not in log
    row = Row(
        key=f"state/1-credentials-{kind.replace(' ', '-')}",
        scenario=f"credentials.toml damaged at start ({kind})",
        rule="§4/§5: an unparsable credentials file is an error naming it, exit 78, never "
        "overwritten",
        iterations=1,
        figure=f"exit {code} after {took:.1f} s; "
        f"{'names the file' if names_it else 'does NOT name the file'}; "
        f"{'file untouched' if untouched else 'FILE CHANGED'}",
        goal="exit 78 naming the file, no traceback, file untouched",
        passed=code == EXIT_CONFIG and names_it and untouched and no_traceback,
    )
    recorder(row)
    assert code == EXIT_CONFIG, log[-2000:]
    assert names_it, log[-2000:]
    assert no_traceback, log[-2000:]
    assert untouched


async def _links_with_a_fresh_file(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, name: str, kind: str
) -> dict[str, Any]:
    """Damage ``name`` in the state dir, start the daemon, use it; what was seen."""
    hub = fault_hub(devcloud, tmp_path / "hub")
    path = hub.settings.state_dir / name
    # Real files first, so that "cut in half" cuts a real database.
    Producer(hub, via="send").queue_one()
    store = StateStore.load(hub.settings.state_dir)
    store.record_user_revoked(
        UserRevoked(type="user_revoked", user_id="7", email="x@example.com", reason="seed")
    )
    store.close()
    damaged = damage(path, kind)
    started = time.monotonic()
    daemon = await linked(daemons, hub)
    linked_after = time.monotonic() - started
    # A write to each store: a command recorded in the state file, events through the outbox.
    update = {
        "type": "plugin_update_available",
        "plugin_id": "faults",
        "new_version": "2.0",
        "download_url": "https://example.com/faults-2.0.zip",
    }
    assert await devcloud.push(hub.hub_id, update)
    status = await daemon.wait_status(lambda s: bool(s["plugin_updates"]))
    async with Producer(hub) as events:
        await wait_until(lambda: len(events.arrived()) >= 5, what="events after the restart")
    missing = await events.settle()
    aside = sorted(path.parent.glob(f"{name}.corrupt-*"))
    errors = [e for e in daemon.log_events() if e.get("level") == "error" and str(path) in str(e)]
    return {
        "linked_s": linked_after,
        "aside": [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))],
        "aside_kept": bool(aside) and aside[0].read_bytes() == damaged,
        "logged": bool(errors),
        "queued": len(events.accepted),
        "lost": len(missing),
        "status_ok": status["plugin_updates"][0]["plugin_id"] == "faults",
    }


def _fresh_row(key: str, scenario: str, data: dict[str, Any]) -> Row:
    passed = bool(data["aside"]) and data["aside_kept"] and data["logged"] and not data["lost"]
    return Row(
        key=key,
        scenario=scenario,
        rule="§4: nothing is silently overwritten; the daemon keeps running (moved aside, "
        "a loud error, a fresh file)",
        iterations=1,
        figure=f"linked {data['linked_s']:.1f} s after start; moved aside: "
        f"{', '.join(data['aside']) or 'NO'}; {data['lost']} of {data['queued']} new events lost",
        goal="links, the damaged file kept aside, an error naming it, 0 lost",
        passed=passed,
        data=data,
    )


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("name", [NOTICES, OUTBOX])
async def test_a_corrupt_state_file_or_outbox_is_moved_aside_and_the_hub_links(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any, name: str, kind: str
) -> None:
    data = await _links_with_a_fresh_file(devcloud, tmp_path, daemons, name, kind)
    number = 2 if name == NOTICES else 3
    row = _fresh_row(
        f"state/{number}-{name.split('.', maxsplit=1)[0]}-{kind.replace(' ', '-')}",
        f"{name} damaged ({kind})",
        data,
    )
    recorder(row)
    assert row.passed, row.figure
