"""`hublink demo`, the README's first command, as a user runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from support.cli import run_hublink

STEPS = (
    "cloud started",
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


def test_demo_says_how_to_get_frp_when_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"
    env["HUBLINK_FRP_BIN"] = str(tmp_path)  # empty: no frp here
    result = run_hublink("demo", env=env, timeout=80)
    assert "make frp" in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
