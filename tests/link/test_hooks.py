"""Hooks (contract section 6), run as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hublink.config import Settings
from hublink.link.hooks import MAX_ATTEMPTS, HookRunner
from support.daemon import spawn
from support.devcloud import HubEnv
from support.polling import wait_until

__all__ = ["spawn"]  # the fixture, imported for pytest


def write_hook(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def runner(tmp_path: Path, hook: Path | str, *, timeout: float = 10.0) -> HookRunner:
    settings = Settings(
        state_dir=tmp_path, hooks={"user_revoked": (str(hook), "--flag")}, hooks_timeout=timeout
    )
    return HookRunner(settings)


wait_for = partial(wait_until, timeout=20.0)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes, but os.kill(…, 0) still succeeds on it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


async def test_hook_gets_message_on_stdin_and_type_in_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("SHOP_NAME", "corner")
    out = tmp_path / "out"
    hook = write_hook(
        tmp_path,
        "hook",
        f'cat > {out}.json\necho "$HUBLINK_MESSAGE_TYPE|$1|${{NOTIFY_SOCKET:-none}}|'
        f'${{WATCHDOG_USEC:-none}}|$SHOP_NAME" > {out}.env\n',
    )
    message = {"type": "user_revoked", "user_id": "7", "email": "a@b.c", "reason": "gone"}
    with capture_logs() as logs:
        ok = await runner(tmp_path, hook).run("user_revoked", json.dumps(message).encode())
    assert ok
    assert json.loads((tmp_path / "out.json").read_text()) == message
    assert (tmp_path / "out.env").read_text().strip() == "user_revoked|--flag|none|none|corner"
    assert [e["event"] for e in logs] == ["hook succeeded"]


async def test_hook_environment_keeps_settings_but_never_the_server_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tunnel.server_token may come from the environment (systemd EnvironmentFile=);
    # a hook must not find it in its /proc/PID/environ. Other settings stay, so a
    # hook can run `hublink send` against the daemon's own state_dir.
    monkeypatch.setenv("HUBLINK_TUNNEL__SERVER_TOKEN", "fleet-s3cret")
    monkeypatch.setenv("hublink_tunnel__server_token", "fleet-s3cret-lower")
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "env"
    hook = write_hook(tmp_path, "hook", f"env > {out}\n")
    assert await runner(tmp_path, hook).run("user_revoked", b"{}")
    seen = out.read_text()
    assert "fleet-s3cret" not in seen
    assert f"HUBLINK_STATE_DIR={tmp_path / 'state'}" in seen.splitlines()
    assert "HUBLINK_MESSAGE_TYPE=user_revoked" in seen.splitlines()


async def test_no_hook_configured_is_a_quiet_success(tmp_path: Path) -> None:
    hooks = HookRunner(Settings(state_dir=tmp_path))
    with capture_logs() as logs:
        assert await hooks.run("user_revoked", b"{}")
    assert logs == []


async def test_failing_hook_is_retried_with_stderr_logged(tmp_path: Path) -> None:
    count = tmp_path / "count"
    hook = write_hook(
        tmp_path,
        "hook",
        f"echo run >> {count}\necho 'cannot reach the POS: token=hunter2secret' >&2\nexit 3\n",
    )
    started = time.monotonic()
    with capture_logs() as logs:
        ok = await runner(tmp_path, hook, timeout=1.0).run("user_revoked", b"{}")
    assert not ok
    # The first run, then "retried up to 3 times" (contract section 6).
    assert count.read_text().count("run") == MAX_ATTEMPTS == 4
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["attempt"] for e in warnings] == [1, 2, 3, 4]
    for event in warnings:
        assert event["event"] == "hook exited with status 3"
        assert event["returncode"] == 3
        assert "cannot reach the POS" in event["stderr"]
        assert "hunter2secret" not in event["stderr"]
    assert logs[-1]["log_level"] == "error"
    assert logs[-1]["event"] == "hook failed; giving up"
    # Backoff scales with hooks_timeout: 0.1 s, 0.2 s, then 0.4 s here.
    assert time.monotonic() - started < 5


async def test_hook_that_fails_once_then_succeeds(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    hook = write_hook(
        tmp_path,
        "hook",
        f"if [ -e {marker} ]; then exit 0; fi\ntouch {marker}\necho flaky >&2\nexit 1\n",
    )
    with capture_logs() as logs:
        assert await runner(tmp_path, hook, timeout=1.0).run("user_revoked", b"{}")
    assert [(e["log_level"], e.get("attempt")) for e in logs] == [("warning", 1), ("info", 2)]


async def test_hanging_hook_is_killed_with_its_children_and_retried(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = write_hook(
        tmp_path,
        "hook",
        f"sleep 300 &\necho $! >> {pids}\necho 'stuck waiting' >&2\nwait\n",
    )
    started = time.monotonic()
    with capture_logs() as logs:
        ok = await runner(tmp_path, hook, timeout=0.5).run("user_revoked", b"{}")
    elapsed = time.monotonic() - started
    assert not ok
    children = [int(line) for line in pids.read_text().split()]
    assert len(children) == MAX_ATTEMPTS
    for child in children:
        assert not pid_alive(child), f"the hook's child {child} survived"
    timeouts = [e for e in logs if e.get("timed_out")]
    assert len(timeouts) == MAX_ATTEMPTS
    assert timeouts[0]["event"] == "hook timed out after 0.5 s and was killed"
    assert "stuck waiting" in timeouts[0]["stderr"]
    assert elapsed < 10


async def test_missing_executable_is_not_retried(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-hook"
    with capture_logs() as logs:
        ok = await runner(tmp_path, missing, timeout=1.0).run("user_revoked", b"{}")
    assert not ok
    assert len(logs) == 1
    assert logs[0]["log_level"] == "error"
    assert logs[0]["event"] == "hook cannot be started; not retrying"
    assert logs[0]["hook"] == str(missing)
    assert "No such file" in logs[0]["error"]


async def test_not_executable_is_not_retried(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o644)
    with capture_logs() as logs:
        assert not await runner(tmp_path, hook).run("user_revoked", b"{}")
    assert [e["event"] for e in logs] == ["hook cannot be started; not retrying"]


async def test_cancelling_kills_the_running_hook(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = write_hook(tmp_path, "hook", f"echo $$ >> {pids}\nexec sleep 300\n")
    task = asyncio.create_task(runner(tmp_path, hook).run("user_revoked", b"{}"))
    await wait_for(lambda: pids.exists() and pids.read_text().strip())
    pid = int(pids.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(pid)


async def test_concurrency_is_limited(tmp_path: Path) -> None:
    running = tmp_path / "running"
    running.mkdir()
    peak = tmp_path / "peak"
    hook = write_hook(
        tmp_path,
        "hook",
        f"touch {running}/$$\nls {running} | wc -l >> {peak}\nsleep 0.3\nrm {running}/$$\n",
    )
    hooks = HookRunner(
        Settings(state_dir=tmp_path, hooks={"user_revoked": (str(hook),)}), concurrency=2
    )
    results = await asyncio.gather(*(hooks.run("user_revoked", b"{}") for _ in range(6)))
    assert all(results)
    counts = [int(line) for line in peak.read_text().split()]
    assert len(counts) == 6
    assert max(counts) <= 2


# --- in the daemon ------------------------------------------------------------


async def test_daemon_runs_hooks_while_heartbeats_keep_flowing(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    cloud, hub_id = hub_settings.cloud, hub_settings.hub_id
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
    daemon = await spawn(env={"HUBLINK_HOOKS": json.dumps(hooks), "HUBLINK_HOOKS_TIMEOUT": "120"})
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
        subprocess.run,
        [
            sys.executable,
            "-m",
            "hublink",
            "send",
            "plugin_installed",
            "--data",
            json.dumps(installed),
        ],
        env=os.environ
        | {
            "HUBLINK_STATE_DIR": str(hub_settings.settings.state_dir),
            "HUBLINK_RUNTIME_DIR": str(hub_settings.settings.runtime_dir),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    await daemon.wait_status(lambda s: s["plugin_updates"] == [])
    await wait_until(lambda: cloud.events(hub_id), what="the plugin_installed event")
    assert cloud.events(hub_id)[0]["id"] == sent.stdout.strip()

    # Stopping the daemon kills the hook that still hangs.
    pid = int(hung.read_text())
    assert await daemon.terminate() == 0
    assert not pid_alive(pid)


# --- judged by the exit, not by the end of the output (issue 10, item 12) -----


def processes_with(marker: str, argv: list[str]) -> list[int]:
    """Live processes whose command line is ``argv`` and whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")[:-1]
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        ours = [part.decode() for part in cmdline] == argv and marker.encode() in environ
        if ours and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize(
    "leftover",
    [
        "sleep 30 &",  # holds stdin, stdout and stderr
        "sleep 30 2>&1 >/dev/null </dev/null &",  # holds stderr only
        "sleep 30 </dev/null >/dev/null 2>&1 &",  # holds nothing of ours
        "(sleep 30; echo late >&2) &",  # writes to stderr after the hook exited
    ],
)
async def test_a_hook_that_exits_zero_succeeds_whatever_it_leaves_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leftover: str
) -> None:
    marker = f"HUBLINK_TEST_MARK={tmp_path}"
    monkeypatch.setenv("HUBLINK_TEST_MARK", str(tmp_path))
    count = tmp_path / "count"
    hook = write_hook(
        tmp_path, "hook", f"echo run >> {count}\necho said-before-exit >&2\n{leftover}\nexit 0\n"
    )
    hooks = runner(tmp_path, hook, timeout=3.0)
    with capture_logs() as logs:
        assert await hooks.run("user_revoked", b"{}")
    assert count.read_text() == "run\n"  # once: no timeout, no retry
    assert [e["event"] for e in logs] == ["hook succeeded"]
    assert processes_with(marker, ["sleep", "30"])  # the hook's own business, until we stop
    hooks.kill_leftovers()
    await wait_for(lambda: not processes_with(marker, ["sleep", "30"]), what="leftovers killed")


async def test_a_failing_hook_is_judged_by_its_exit_and_its_stderr_kept(tmp_path: Path) -> None:
    hook = write_hook(tmp_path, "hook", "echo 'the POS is down' >&2\nsleep 30 &\nexit 4\n")
    hooks = runner(tmp_path, hook, timeout=3.0)
    with capture_logs() as logs:
        assert not await hooks.run("user_revoked", b"{}")
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["returncode"], e["timed_out"]) for e in warnings] == [(4, False)] * MAX_ATTEMPTS
    assert all("the POS is down" in e["stderr"] for e in warnings)
    hooks.kill_leftovers()


async def test_a_hook_that_never_reads_a_large_stdin_still_exits_and_succeeds(
    tmp_path: Path,
) -> None:
    hook = write_hook(tmp_path, "hook", "exit 0\n")
    payload = json.dumps({"type": "user_revoked", "user_id": "u", "reason": "x" * 900_000})
    with capture_logs() as logs:
        assert await runner(tmp_path, hook, timeout=3.0).run("user_revoked", payload.encode())
    assert [e["event"] for e in logs] == ["hook succeeded"]


async def test_the_daemon_judges_a_hook_by_its_exit_and_leaves_no_orphan(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    # Issue 10 item 12, as reported: the hook exits 0 at once, its background
    # child holds its output open; it ran 4 times and the child outlived the daemon.
    runs = tmp_path / "F"
    hook = ["/bin/sh", "-c", f"echo run >> {runs}; sleep 21.5 & exit 0"]
    daemon = await spawn(
        env={"HUBLINK_HOOKS": json.dumps({"user_revoked": hook}), "HUBLINK_HOOKS_TIMEOUT": "3"}
    )
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    message = {"type": "user_revoked", "user_id": "u-7", "email": "c@example.com", "reason": "x"}
    assert await hub_settings.cloud.push(hub_settings.hub_id, message)
    await wait_for(
        lambda: any(e["event"] == "hook succeeded" for e in daemon.log_events()),
        what="the hook's success",
    )
    marker = f"HUBLINK_STATE_DIR={hub_settings.settings.state_dir}"
    assert processes_with(marker, ["sleep", "21.5"])
    assert runs.read_text() == "run\n"
    events = [e["event"] for e in daemon.log_events()]
    assert not any("timed out" in event for event in events)
    assert await daemon.terminate() == 0
    await wait_for(lambda: not processes_with(marker, ["sleep", "21.5"]), what="no orphan left")
    assert runs.read_text() == "run\n"
