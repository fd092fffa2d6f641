"""Under systemd, `hublink run` writes journald's native lines: <N> priority, no time, key=value."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from support.cli import HUBLINK_COMMAND
from support.cloud import HubEnv
from support.polling import wait_until

PRIORITY = re.compile(r"^<([0-7])>\S")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")


async def run_daemon(hub: HubEnv, tmp_path: Path, *, journal_stream: str | None) -> list[str]:
    """Run the daemon with stderr in a file, make it log a few things, stop it; its lines.

    ``journal_stream`` of None means the real ``dev:inode`` of that file, as
    systemd sets ``$JOURNAL_STREAM`` for a service whose stderr is the journal.
    """
    settings = hub.settings
    stderr_path = tmp_path / "stderr"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUBLINK_")}
    (tmp_path / "empty.toml").write_text("")
    env |= {
        "HUBLINK_CONFIG": str(tmp_path / "empty.toml"),
        "HUBLINK_CLOUD_URL": settings.cloud_url,
        "HUBLINK_STATE_DIR": str(settings.state_dir),
        "HUBLINK_RUNTIME_DIR": str(settings.runtime_dir),
        "HUBLINK_TUNNEL__ENABLED": "false",
        "HUBLINK_WEBSOCKET__HEARTBEAT_INTERVAL": "0.2",
    }
    with stderr_path.open("wb") as stderr:
        info = os.fstat(stderr.fileno())
        env["JOURNAL_STREAM"] = journal_stream or f"{info.st_dev}:{info.st_ino}"
        daemon = await asyncio.create_subprocess_exec(
            *HUBLINK_COMMAND,
            "run",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        try:
            cloud = hub.cloud
            await wait_until(lambda: len(cloud.heartbeats(hub.hub_id)) >= 2, timeout=20)
            # A warning (unknown type) and an info with fields (a recorded update).
            await cloud.push(hub.hub_id, {"type": "no_such_type"})
            await cloud.push(
                hub.hub_id,
                {
                    "type": "plugin_update_available",
                    "plugin_id": "inventory",
                    "current_version": "1.0",
                    "new_version": "1.1",
                    "download_url": "https://example.invalid/inventory-1.1.zip",
                },
            )
            await wait_until(
                lambda: (
                    "plugin update" in stderr_path.read_text()
                    and "no_such_type" in stderr_path.read_text()
                ),
                timeout=20,
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(daemon.wait(), 15)
    assert code == 0
    return [line for line in stderr_path.read_text().splitlines() if line.strip()]


async def test_journal_lines_carry_priority_fields_and_no_time(hub: HubEnv, tmp_path: Path) -> None:
    lines = await run_daemon(hub, tmp_path, journal_stream=None)
    assert len(lines) >= 4
    for line in lines:
        assert PRIORITY.match(line), line
        assert not TIMESTAMP.search(line), line  # journald stamps entries itself
        assert f"hub_id={hub.hub_id}" in line, line
    assert hub.token not in "\n".join(lines)

    warning = next(line for line in lines if "no_such_type" in line)
    assert warning.startswith("<4>")
    update = next(line for line in lines if "plugin update" in line)
    assert update.startswith("<6>")
    assert "plugin_id=inventory" in update
    assert "new_version=1.1" in update


async def test_journal_lines_name_their_task(hub: HubEnv, tmp_path: Path) -> None:
    lines = await run_daemon(hub, tmp_path, journal_stream=None)
    link_lines = [line for line in lines if line.startswith("<6>link connected")]
    assert link_lines
    assert all("task=link" in line for line in link_lines)


async def test_a_stderr_that_is_not_the_journal_gets_timestamped_json(
    hub: HubEnv, tmp_path: Path
) -> None:
    # JOURNAL_STREAM inherited from a parent service, but stderr went elsewhere.
    lines = await run_daemon(hub, tmp_path, journal_stream="1:1")
    assert lines
    for line in lines:
        assert line.startswith("{"), line
        assert TIMESTAMP.search(line), line
