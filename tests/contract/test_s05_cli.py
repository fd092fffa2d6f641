"""The command line as an operator meets it: exit codes, --version, unregister, pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hublink import __version__
from support.devcloud import HubEnv


def hublink(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hublink", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=30,
        check=False,
    )


def env_for(state_dir: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env |= {"HUBLINK_CONFIG": str(config), "HUBLINK_STATE_DIR": str(state_dir)}
    return env


def test_version() -> None:
    result = hublink("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"hublink {__version__}")


def test_help_and_wrong_usage() -> None:
    assert hublink("--help").returncode == 0
    wrong = hublink("no-such-command")
    assert wrong.returncode == 2
    assert "invalid choice" in wrong.stderr
    assert hublink().returncode == 2
    assert hublink("send", "heartbeat", "--data", "{}").returncode == 2


def test_config_is_accepted_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "placed.toml"
    config.write_text(f'state_dir = "{tmp_path / "from-file"}"\n')
    for argv in (
        ("--config", str(config), "status", "--json"),
        ("status", "--config", str(config), "--json"),
    ):
        result = hublink(*argv)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["state_dir"] == str(tmp_path / "from-file")
    assert hublink("status", "--config", str(tmp_path / "absent.toml")).returncode == 78


def test_a_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    config.write_text("[websocket]\nheartbeat_interval = -5\n")
    result = hublink("status", env=env_for(tmp_path / "state", config))
    assert result.returncode == 78
    assert "websocket.heartbeat_interval = -5" in result.stderr
    assert "Traceback" not in result.stderr


def test_unregister_forgets_the_credentials(hub_settings: HubEnv, tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    env = env_for(hub_settings.settings.state_dir, config)
    credentials = hub_settings.settings.credentials_path
    frpc_config = hub_settings.settings.state_dir / "frpc.toml"
    frpc_config.write_text(f'metadatas.token = "{hub_settings.token}"\n')  # as the tunnel leaves it
    refused = hublink("unregister", env=env, stdin="")
    assert refused.returncode == 2  # not a terminal and no --yes: nothing asked, nothing done
    assert credentials.exists()
    done = hublink("unregister", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert not credentials.exists()
    assert not frpc_config.exists()  # it held the same token
    assert hublink("run", env=env).returncode == 78
    again = hublink("unregister", "--yes", env=env)
    assert again.returncode == 0
    assert "not registered" in again.stdout


def test_a_closed_pipe_is_not_a_crash(tmp_path: Path) -> None:
    env = env_for(tmp_path / "state", tmp_path / "hublink.toml")
    with subprocess.Popen(
        [sys.executable, "-m", "hublink", "status", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # like `| head -0`: the reader is gone before the output
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=30)
    assert "Traceback" not in stderr
    assert code == 1
