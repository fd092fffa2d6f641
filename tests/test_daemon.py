"""The daemon in-process: task supervision, and start-up before any task runs.

``hublink run`` as a real process, seen from outside, is in tests/contract
(test_s05_cli.py: start-up, signals, one daemon only, re-registration).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from hublink.config import TunnelSettings
from hublink.control import fetch_status
from hublink.daemon import Daemon
from hublink.devcloud import DevCloud
from hublink.link.events import queue_event
from hublink.link.notices import StateStore
from hublink.link.outbox import Outbox
from hublink.supervise import supervise
from support.cloud import make_hub_env
from support.daemon import Daemons
from support.polling import wait_until


async def test_supervise_restarts_a_crashed_task_with_its_traceback_logged() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(supervise("flaky", flaky, restart_min=0.01), timeout=5)
    assert len(runs) == 3
    crashes = [e for e in logs if e["event"] == "task crashed; restarting it"]
    assert [e["task"] for e in crashes] == ["flaky", "flaky"]
    assert all(e["log_level"] == "error" and e.get("exc_info") for e in crashes)


async def test_supervise_lets_cancellation_through() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(supervise("forever", forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_enabled_tunnel_is_never_reported_disabled_while_starting(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    # The control socket answers before the tunnel task has made its first
    # move: status must already say "starting" (contract §5's vocabulary), not
    # "disabled"; it moves on from there as frpc (missing here) fails.
    env = make_hub_env(
        devcloud,
        tmp_path,
        tunnel=TunnelSettings(enabled=True, frpc_path=str(tmp_path / "no-frpc")),
    )
    daemon = Daemon(env.settings)
    await daemon.startup()
    main = asyncio.create_task(daemon.main_loop())
    seen: list[str] = []
    try:

        async def answered() -> bool:
            status = await fetch_status(env.settings.control_socket)
            if status is not None:
                seen.append(status["tunnel"]["state"])
            return len(seen) >= 3

        await wait_until(answered)
    finally:
        daemon._stop.set()
        await main
        await daemon.shutdown()
    assert "disabled" not in seen
    assert seen[0] in ("starting", "backoff", "failed")


async def test_an_event_another_process_queued_without_a_poke_leaves_within_a_heartbeat(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    # `hublink send` writes the outbox itself when the daemon does not answer (a
    # moment at start-up, before the control socket opens), and its poke then
    # finds no socket: the connected link must find the event on its own.
    hub = make_hub_env(devcloud, tmp_path / "hub")
    daemon = await daemons.start(hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    # Two heartbeats: the drain has long found the outbox empty and waits.
    await wait_until(lambda: len(devcloud.heartbeats(hub.hub_id)) >= 2, what="two heartbeats")

    outbox = Outbox.for_settings(hub.settings)
    notices = StateStore.load(hub.settings.state_dir)
    try:
        event_id = queue_event(outbox, notices, "user_sync", {"users": []})
    finally:
        notices.close()
        outbox.close()

    await wait_until(
        lambda: any(e.get("id") == event_id for e in devcloud.events(hub.hub_id)),
        what="the event queued without a poke",
    )
