"""`hublink demo`, the README's first command, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from support.cli import HUBLINK_COMMAND, run_hublink

PAGE_URL = re.compile(r"http://127\.0\.0\.1:\d+/\?code=[A-Za-z0-9]{8,}")
STEPS = (
    "cloud started",
    "daemon waiting",
    "local page",
    "registered",
    "connected",
    "heartbeats arriving",
    "user_sync delivered",
    "user_revoked → hook",
    "tunnel request",
    "backup requested",
    "backup uploaded",
    "backup restored",
    "daemon stopped",
)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_runs_the_whole_flow(frp_bin: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env["HUBLINK_FRP_BIN"] = str(frp_bin)
    result = run_hublink("demo", env=env, timeout=80)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for step in STEPS:
        assert any(step in line for line in lines), f"{step!r} missing:\n{result.stdout}"
    assert "Hello from the shop's Hub" in result.stdout
    assert "exit code 0 after SIGTERM" in result.stdout
    assert "demo done" in lines[-1]
    # The page's URL with its setup code, as `hublink status` shows it (issue 14).
    assert PAGE_URL.search(result.stdout), result.stdout


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_demo_keep_leaves_the_page_up_to_open(frp_bin: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env["HUBLINK_FRP_BIN"] = str(frp_bin)
    proc = await asyncio.create_subprocess_exec(
        *HUBLINK_COMMAND,
        "demo",
        "--keep",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(70):
            while not any(line.startswith("Left running") for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
            while not any("the local page:" in line for line in seen):
                seen.append((await proc.stdout.readline()).decode())
        found = PAGE_URL.search(seen[-1])
        assert found, seen[-1]
        # unsafe: keep the session cookie of an IP address host, as a browser does.
        jar = aiohttp.CookieJar(unsafe=True)
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as session,
            session.get(found.group(0)) as page,
        ):
            assert page.status == 200
            html = await page.text()
        # Unlocked by the code in the URL, the page shows the enrolled hub's status.
        assert 'id="status"' in html and "Demo Shop" in html
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 20)


def test_demo_says_how_to_get_frp_when_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"
    env["HUBLINK_FRP_BIN"] = str(tmp_path)  # empty: no frp here
    result = run_hublink("demo", env=env, timeout=80)
    assert "make frp" in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
