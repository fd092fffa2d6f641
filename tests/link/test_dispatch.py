"""The dispatcher: records, hooks and backups for Cloud→Hub messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from hublink.config import Settings
from hublink.link.dispatch import HANDLERS, NO_BACKUP_RUNNER, BackupRunner, Dispatcher
from hublink.link.messages import (
    BackupCompleted,
    BackupFailed,
    parse_inbound,
)
from hublink.link.notices import StateStore
from hublink.link.outbox import AsyncOutbox
from support.polling import wait_until


def hook(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


class Harness:
    """A running dispatcher over a real store and outbox in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store: StateStore
        self.outbox: AsyncOutbox
        self.dispatcher: Dispatcher
        self.task: asyncio.Task[None] | None = None

    async def start(
        self, *, hooks: dict[str, tuple[str, ...]] | None = None, backup: BackupRunner | None = None
    ) -> Dispatcher:
        settings = Settings(state_dir=self.tmp_path, hooks=hooks or {}, hooks_timeout=30)
        self.store = StateStore.load(self.tmp_path)
        self.outbox = await AsyncOutbox.open(self.tmp_path)
        self.dispatcher = Dispatcher(settings, self.store, self.outbox, backup=backup)
        self.task = asyncio.create_task(self.dispatcher.run())
        return self.dispatcher

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            await self.outbox.close()
            await self.store.aclose()

    async def queued(self) -> list[dict[str, Any]]:
        return [json.loads(item.frame) for item in await self.outbox.peek(100)]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    running = Harness(tmp_path)
    yield running
    await running.stop()


def frame(**fields: object) -> str:
    return json.dumps(fields)


UPDATE = frame(
    type="plugin_update_available",
    plugin_id="inventory",
    current_version="1.0",
    new_version="1.1",
    download_url="https://cdn.example/inventory-1.1.zip",
)
REVOKED = frame(type="user_revoked", user_id="u1", email="u1@shop.example", reason="left")


async def test_messages_are_recorded_at_once(harness: Harness) -> None:
    dispatcher = await harness.start()
    dispatcher.dispatch(parse_inbound(UPDATE))
    dispatcher.dispatch(parse_inbound(REVOKED))
    snapshot = harness.store.snapshot()
    assert [u["new_version"] for u in snapshot["plugin_updates"]] == ["1.1"]
    assert [u["user_id"] for u in snapshot["revoked_users"]] == ["u1"]


async def test_hook_runs_with_the_message(harness: Harness, tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    command = hook(tmp_path, "notify", f"cat > {out}.tmp && mv {out}.tmp {out}\n")
    dispatcher = await harness.start(hooks={"plugin_update_available": (command,)})
    # Fields newer than this hublink reach the hook too; absent optional ones are not invented.
    sent = {**json.loads(UPDATE), "release_notes": {"en": "faster"}}
    del sent["current_version"]
    dispatcher.dispatch(parse_inbound(json.dumps(sent)))
    await wait_until(out.exists, timeout=20.0)
    assert json.loads(out.read_text()) == sent


async def test_hook_gets_the_message_exactly_as_sent(harness: Harness, tmp_path: Path) -> None:
    # The Cloud is Django: ids arrive as integers. Validation reads them as
    # strings, but the hook must see the message the Cloud sent (contract §6).
    out = tmp_path / "got.json"
    command = hook(tmp_path, "revoke", f"cat > {out}.tmp && mv {out}.tmp {out}\n")
    dispatcher = await harness.start(hooks={"user_revoked": (command,)})
    sent = {"type": "user_revoked", "user_id": 42, "email": " u@shop.example ", "reason": "left"}
    dispatcher.dispatch(parse_inbound(json.dumps(sent)))
    await wait_until(out.exists, timeout=20.0)
    got = json.loads(out.read_text())
    assert got == sent
    assert type(got["user_id"]) is int


async def test_hanging_hook_never_blocks_dispatch(harness: Harness, tmp_path: Path) -> None:
    started = tmp_path / "started"
    command = hook(tmp_path, "hang", f"echo $$ >> {started}\nexec sleep 300\n")
    dispatcher = await harness.start(hooks={"user_revoked": (command,)})
    before = time.perf_counter()
    for n in range(20):
        dispatcher.dispatch(parse_inbound(frame(type="user_revoked", user_id=f"u{n}")))
    assert time.perf_counter() - before < 0.5
    # The hooks hang (4 at a time); the loop keeps turning and records keep landing.
    await wait_until(
        lambda: started.exists() and len(started.read_text().split()) == 4, timeout=20.0
    )
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10
    assert len(harness.store.snapshot()["revoked_users"]) == 20
    assert dispatcher.active_jobs == 20
    # Stopping the dispatcher kills the hanging hooks.
    pids = [int(p) for p in started.read_text().split()]
    await harness.stop()
    harness.task = None
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


class Boom(BaseModel):
    type: Literal["test_boom"] = "test_boom"


@HANDLERS.register("test_boom")
def _boom(dispatcher: Dispatcher, message: Boom) -> None:
    raise RuntimeError("handler bug")


async def test_a_failing_handler_does_not_end_run(harness: Harness) -> None:
    dispatcher = await harness.start()
    with capture_logs() as logs:
        dispatcher.dispatch(Boom())  # type: ignore[arg-type]
    assert logs[0]["event"] == "handler failed; message dropped"
    assert logs[0]["log_level"] == "error"
    dispatcher.dispatch(parse_inbound(REVOKED))
    await asyncio.sleep(0)
    assert harness.task is not None and not harness.task.done()
    assert [u["user_id"] for u in harness.store.snapshot()["revoked_users"]] == ["u1"]


async def test_backup_without_runner_answers_backup_failed(harness: Harness) -> None:
    dispatcher = await harness.start()
    dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="owner@x")))
    await wait_until(harness.outbox.wakeup.is_set, timeout=20.0)
    (answer,) = await harness.queued()
    assert answer["type"] == "backup_failed"
    assert answer["error"] == NO_BACKUP_RUNNER
    assert answer["requested_by"] == "owner@x"
    assert answer["id"]
    last = harness.store.snapshot()["last_backup"]
    assert last["result"] == "failed" and last["error"] == NO_BACKUP_RUNNER


async def test_backup_runner_result_is_queued(harness: Harness) -> None:
    calls: list[str] = []

    async def backup(requested_by: str) -> BackupCompleted:
        calls.append(requested_by)
        await asyncio.sleep(0.05)
        return BackupCompleted(
            backup_id="b-7",
            filename="hub.db.zst.age",
            size=42,
            sha256="f" * 64,
            requested_by=requested_by,
        )

    dispatcher = await harness.start(backup=backup)
    dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="owner")))
    dispatcher.dispatch(parse_inbound(REVOKED))  # not held up by the backup
    assert harness.store.snapshot()["revoked_users"]
    await wait_until(harness.outbox.wakeup.is_set, timeout=20.0)
    (answer,) = await harness.queued()
    assert calls == ["owner"]
    assert (answer["type"], answer["backup_id"], answer["size"]) == ("backup_completed", "b-7", 42)
    assert harness.store.snapshot()["last_backup"]["backup_id"] == "b-7"


async def test_backup_runner_crash_still_answers(harness: Harness) -> None:
    async def backup(requested_by: str) -> BackupFailed:
        raise OSError("disk on fire, token=abcdef123456")

    dispatcher = await harness.start(backup=backup)
    with capture_logs():
        dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="o")))
        await wait_until(harness.outbox.wakeup.is_set, timeout=20.0)
    (answer,) = await harness.queued()
    assert answer["type"] == "backup_failed"
    assert "disk on fire" in answer["error"]
    assert "abcdef123456" not in answer["error"]
    assert harness.task is not None and not harness.task.done()


async def test_jobs_dispatched_before_run_starts_are_kept(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    store = StateStore.load(tmp_path)
    outbox = await AsyncOutbox.open(tmp_path)
    dispatcher = Dispatcher(settings, store, outbox)
    dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="early")))
    assert dispatcher.active_jobs == 1
    task = asyncio.create_task(dispatcher.run())
    try:
        await wait_until(outbox.wakeup.is_set, timeout=20.0)
        assert [json.loads(i.frame)["requested_by"] for i in await outbox.peek(10)] == ["early"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await outbox.close()
        store.close()


async def test_plugin_installed_through_the_daemon_outbox_clears_the_update(
    harness: Harness,
) -> None:
    dispatcher = await harness.start()
    dispatcher.dispatch(parse_inbound(UPDATE))
    await harness.outbox.queue(
        harness.store,
        "plugin_installed",
        {"plugin_id": "inventory", "version": "1.1", "installed_at": "2025-01-01T00:00:00Z"},
    )
    assert harness.store.snapshot()["plugin_updates"] == []


async def test_ten_thousand_updates_dispatch_fast(harness: Harness) -> None:
    dispatcher = await harness.start()
    messages = [
        parse_inbound(
            frame(
                type="plugin_update_available",
                plugin_id=f"p{n % 100}",
                current_version="1",
                new_version=f"2.{n}",
                download_url="https://cdn.example/x.zip",
            )
        )
        for n in range(10_000)
    ]
    latencies = []
    for message in messages:
        before = time.perf_counter()
        dispatcher.dispatch(message)
        latencies.append(time.perf_counter() - before)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 < 0.005, f"p99 dispatch latency {p99 * 1000:.2f} ms"
    harness.store.flush()
    assert len(harness.store.snapshot()["plugin_updates"]) == 100


async def test_a_second_backup_request_is_answered_by_the_runner_at_once(harness: Harness) -> None:
    release = asyncio.Event()
    running = False

    async def backup(requested_by: str) -> BackupCompleted | BackupFailed:
        # Like the real runner: one backup at a time, a second request refused at once.
        nonlocal running
        if running:
            return BackupFailed(error="a backup is already running", requested_by=requested_by)
        running = True
        await release.wait()
        running = False
        return BackupCompleted(
            backup_id="b-1", filename="f", size=1, sha256="e" * 64, requested_by=requested_by
        )

    dispatcher = await harness.start(backup=backup)
    dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="first")))
    await wait_until(lambda: running, timeout=20.0)
    dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="second")))
    await wait_until(harness.outbox.wakeup.is_set, timeout=20.0)
    (refused,) = await harness.queued()
    assert (refused["type"], refused["requested_by"]) == ("backup_failed", "second")
    assert refused["error"] == "a backup is already running"
    harness.store.flush()
    assert harness.store.snapshot()["last_backup"] is None  # a refusal is no backup
    release.set()
    await wait_until(lambda: dispatcher.active_jobs == 0, timeout=20.0)
    answers = await harness.queued()
    assert [a["type"] for a in answers] == ["backup_failed", "backup_completed"]
    harness.store.flush()
    assert harness.store.snapshot()["last_backup"]["result"] == "completed"


async def test_a_message_during_shutdown_waits_for_the_next_run(
    harness: Harness, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    command = hook(tmp_path, "hang", f"echo $$ > {started}\nexec sleep 300\n")
    dispatcher = await harness.start(hooks={"user_revoked": (command,)})
    dispatcher.dispatch(parse_inbound(REVOKED))
    await wait_until(started.exists, timeout=20.0)
    assert harness.task is not None
    harness.task.cancel()
    await asyncio.sleep(0)  # the TaskGroup is now killing the hook
    with capture_logs() as logs:
        dispatcher.dispatch(parse_inbound(frame(type="backup_request", requested_by="late")))
    assert not [e for e in logs if e["log_level"] == "error"], logs
    with pytest.raises(asyncio.CancelledError):
        await harness.task
    assert dispatcher.active_jobs == 1
    # A restarted run() (the daemon's supervisor does that) answers it.
    harness.task = asyncio.create_task(dispatcher.run())
    await wait_until(harness.outbox.wakeup.is_set, timeout=20.0)
    assert [a["requested_by"] for a in await harness.queued()] == ["late"]
