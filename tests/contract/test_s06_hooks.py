"""Contract section 6, hooks: the daemon runs the configured command for a Cloud message.

What it proves, with a real ``hublink run`` and the reference Cloud: a hook
gets the message as JSON on stdin and ``HUBLINK_MESSAGE_TYPE`` in its
environment; a hook that hangs never blocks the link (heartbeats keep
flowing) and the recorded ``user_revoked`` and ``plugin_update_available`` show
in ``status``; ``hublink send plugin_installed`` clears the update; stopping the
daemon reaps a hook that still runs, and still exits 0 quickly; a hook is
judged by its exit (a background child holding its output is no timeout) and
leaves no orphan once the daemon stops.
The hook runner's own rules (retries, timeouts, environment) are in
tests/link/test_hooks.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from hublink.devcloud import DevCloud
from support.cli import run_hublink
from support.cloud import HubEnv, make_hub_env
from support.daemon import Daemons
from support.polling import wait_until
from support.processes import find_processes_with, is_alive, write_hook
from support.timing import scaled


async def test_daemon_runs_hooks_while_heartbeats_keep_flowing(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    cloud, hub_id = hub.cloud, hub.hub_id
    hung = tmp_path / "hung"
    notified = tmp_path / "notified"
    hang = write_hook(
        tmp_path, "revoke-hook", f"cat > {hung}.json\necho $$ > {hung}\nexec sleep 300\n"
    )
    notify = write_hook(
        tmp_path,
        "notify-hook",
        f'cat > {notified}.json\necho "$HUBLINK_MESSAGE_TYPE" > {notified}.tmp\n'
        f"mv {notified}.tmp {notified}\n",
    )
    hooks = {"user_revoked": [str(hang)], "plugin_update_available": [str(notify)]}
    daemon = await daemons.start(
        env={"HUBLINK_HOOKS": json.dumps(hooks), "HUBLINK_HOOKS_TIMEOUT": "120"}
    )
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")

    revoked = {"type": "user_revoked", "user_id": "u-5", "email": "eve@shop.example", "reason": "x"}
    assert await cloud.push(hub_id, revoked)
    await wait_until(lambda: hung.exists() and hung.read_text().strip(), what="the revoke hook")
    assert json.loads(hung.with_suffix(".json").read_text()) == revoked
    # The hook hangs; the link does not: heartbeats (every 0.2 s) keep arriving.
    seen = len(cloud.heartbeats(hub_id))
    await wait_until(lambda: len(cloud.heartbeats(hub_id)) >= seen + 3, what="3 more heartbeats")

    update = {
        "type": "plugin_update_available",
        "plugin_id": "inventory",
        "current_version": "1.0",
        "new_version": "1.1",
        "download_url": "https://cdn.example/inventory-1.1.zip",
    }
    assert await cloud.push(hub_id, update)
    await wait_until(notified.exists, what="the update hook")
    assert notified.read_text().strip() == "plugin_update_available"
    assert json.loads(notified.with_suffix(".json").read_text()) == update
    status = await daemon.wait_status(lambda s: bool(s["plugin_updates"]))
    assert [u["user_id"] for u in status["revoked_users"]] == ["u-5"]
    assert [u["new_version"] for u in status["plugin_updates"]] == ["1.1"]

    # The Hub installs it: `hublink send plugin_installed` clears the pending update.
    installed = {"plugin_id": "inventory", "version": "1.1", "installed_at": "2025-06-01T00:00:00Z"}
    sent = await asyncio.to_thread(
        run_hublink,
        "send",
        "plugin_installed",
        "--data",
        json.dumps(installed),
        env=os.environ
        | {
            "HUBLINK_STATE_DIR": str(hub.settings.state_dir),
            "HUBLINK_RUNTIME_DIR": str(hub.settings.runtime_dir),
        },
    )
    assert sent.returncode == 0, sent.stderr
    await daemon.wait_status(lambda s: s["plugin_updates"] == [])
    await wait_until(lambda: cloud.events(hub_id), what="the plugin_installed event")
    assert cloud.events(hub_id)[0]["id"] == sent.stdout.strip()

    # Stopping the daemon kills the hook that still hangs.
    pid = int(hung.read_text())
    assert await daemon.terminate() == 0
    assert not is_alive(pid)


async def test_sigterm_while_a_hook_runs_reaps_it_and_still_exits_0_quickly(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    pid_file = tmp_path / "hook.pid"
    hook = ["/bin/sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 60']
    hub = make_hub_env(devcloud, tmp_path / "h", hooks={"user_revoked": hook}, hooks_timeout=120)
    daemon = await daemons.start(hub)
    await wait_until(lambda: hub.heartbeats, what="first heartbeat")
    await devcloud.push(hub.hub_id, {"type": "user_revoked", "user_id": "u1"})
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the hook")
    hook_pid = int(pid_file.read_text())
    started = time.monotonic()
    assert await daemon.terminate() == 0
    assert time.monotonic() - started < 5

    def gone() -> bool:
        try:
            os.kill(hook_pid, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_until(gone, timeout=5, what="the hook reaped")


async def test_the_daemon_judges_a_hook_by_its_exit_and_leaves_no_orphan(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    # Issue 10 item 12, as reported: the hook exits 0 at once, its background
    # child holds its output open; it ran 4 times and the child outlived the daemon.
    runs = tmp_path / "F"
    hook = ["/bin/sh", "-c", f"echo run >> {runs}; sleep 21.5 & exit 0"]
    daemon = await daemons.start(
        env={
            "HUBLINK_HOOKS": json.dumps({"user_revoked": hook}),
            "HUBLINK_HOOKS_TIMEOUT": str(scaled(3)),
        }
    )
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    message = {"type": "user_revoked", "user_id": "u-7", "email": "c@example.com", "reason": "x"}
    assert await hub.cloud.push(hub.hub_id, message)
    await wait_until(
        lambda: any(e["event"] == "hook succeeded" for e in daemon.log_events()),
        what="the hook's success",
    )
    marker = f"HUBLINK_STATE_DIR={hub.settings.state_dir}"
    assert find_processes_with(marker, ["sleep", "21.5"])
    assert runs.read_text() == "run\n"
    events = [e["event"] for e in daemon.log_events()]
    assert not any("timed out" in event for event in events)
    assert await daemon.terminate() == 0
    await wait_until(
        lambda: not find_processes_with(marker, ["sleep", "21.5"]), what="no orphan left"
    )
    assert runs.read_text() == "run\n"
