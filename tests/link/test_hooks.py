"""Hooks (contract section 6), run as real processes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from uuid import uuid4

import pytest
from structlog.testing import capture_logs

from hublink.config import Settings
from hublink.link.hooks import MAX_ATTEMPTS, HookRunner, hook_environment
from support.polling import wait_until
from support.processes import find_processes_with, is_alive, write_hook
from support.timing import scaled

#: A fleet-wide frps token, as systemd's EnvironmentFile= would hand it to hublink.
SERVER_TOKEN = "fleet-token-" + uuid4().hex


def runner(tmp_path: Path, hook: Path | str, *, timeout: float = 10.0) -> HookRunner:
    settings = Settings(
        state_dir=tmp_path,
        hooks={"user_revoked": (str(hook), "--flag")},
        hooks_timeout=scaled(timeout),
    )
    return HookRunner(settings)


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
    assert time.monotonic() - started < scaled(5)


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
    # SIGKILL lands asynchronously: the group was signalled, its last child may take
    # a moment to die. A survivor fails the wait.
    await wait_until(
        lambda: not [child for child in children if is_alive(child)],
        timeout=5,
        what="the hook's children to be gone",
    )
    timeouts = [e for e in logs if e.get("timed_out")]
    assert len(timeouts) == MAX_ATTEMPTS
    assert timeouts[0]["event"] == f"hook timed out after {scaled(0.5):g} s and was killed"
    assert "stuck waiting" in timeouts[0]["stderr"]
    assert elapsed < scaled(10)


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
    await wait_until(lambda: pids.exists() and pids.read_text().strip(), timeout=20.0)
    pid = int(pids.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not is_alive(pid)


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


def test_a_hook_never_inherits_secrets_from_hublinks_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tunnel.server_token may come from the environment (systemd EnvironmentFile=),
    # as frpc's environment already proves is scrubbed (test_tunnel_config).
    monkeypatch.setenv("HUBLINK_TUNNEL__SERVER_TOKEN", SERVER_TOKEN)
    assert SERVER_TOKEN not in hook_environment("user_revoked").values()


# --- judged by the exit, not by the end of the output (issue 10, item 12) -----


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
    assert find_processes_with(marker, ["sleep", "30"])  # the hook's own business, until we stop
    hooks.kill_leftovers()
    await wait_until(
        lambda: not find_processes_with(marker, ["sleep", "30"]),
        timeout=20.0,
        what="leftovers killed",
    )


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
