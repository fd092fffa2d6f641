"""frpc.toml as contract section 3 fixes it, checked by the real ``frpc verify``."""

from __future__ import annotations

import random
import stat
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import SecretStr

from hublink.config import HubSettings, Settings, TunnelSettings
from hublink.credentials import Credentials, CredentialStore
from hublink.retry import Backoff, Jitter
from hublink.tunnel.config import config_path, masked_config, write_config
from hublink.tunnel.supervisor import child_env, parse_line
from support.cli import run_hublink

TOKEN = "tok-" + "x" * 40
SERVER_TOKEN = "fleet-wide-secret"


def _creds() -> Credentials:
    return Credentials(
        hub_id=uuid4(),
        slug="shop-1",
        tunnel_port=7042,
        tunnel_token=SecretStr(TOKEN),
        cloud_url="https://cloud.example.com",
        registered_at=datetime.now(UTC),
    )


def _settings(tmp_path: Path, **tunnel: object) -> Settings:
    return Settings(
        cloud_url="https://cloud.example.com",
        state_dir=tmp_path / "state",
        hub=HubSettings(local_port=8123),
        tunnel=TunnelSettings(**tunnel),
    )


def test_tcp_config_has_exactly_the_contract_keys(tmp_path: Path) -> None:
    creds = _creds()
    path = write_config(_settings(tmp_path), creds, "admin-pass-123")
    config = tomllib.loads(path.read_text())
    assert path == tmp_path / "state" / "frpc.toml"
    assert set(config) == {
        "serverAddr",
        "serverPort",
        "loginFailExit",
        "user",
        "metadatas",
        "log",
        "webServer",
        "proxies",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config["serverAddr"] == "cloud.example.com"  # default: the Cloud's host
    assert config["serverPort"] == 7000
    assert config["loginFailExit"] is False
    assert config["user"] == str(creds.hub_id)
    assert config["metadatas"] == {"token": TOKEN}
    assert config["log"] == {"to": "console", "disablePrintColor": True}
    assert config["webServer"] == {
        "addr": "127.0.0.1",
        "port": 7400,
        "user": "hublink",
        "password": "admin-pass-123",
    }
    assert "auth" not in config
    assert config["proxies"] == [
        {
            "name": "hub",
            "type": "tcp",
            "localIP": "127.0.0.1",
            "localPort": 8123,
            "remotePort": 7042,
        }
    ]


def test_the_file_is_laid_out_as_the_contract_shows_it(tmp_path: Path) -> None:
    # Dotted keys and [[proxies]], as contract section 3 prints the file: an
    # operator comparing the two, or grepping for `metadatas.token`, finds them.
    creds = _creds()
    settings = _settings(tmp_path, server_token=SERVER_TOKEN)
    lines = write_config(settings, creds, "admin-pass-123").read_text().splitlines()
    settings_lines = [line for line in lines if line and not line.startswith("#")]
    assert settings_lines == [
        'serverAddr = "cloud.example.com"',
        "serverPort = 7000",
        "loginFailExit = false",
        f'user = "{creds.hub_id}"',
        f'metadatas.token = "{TOKEN}"',
        f'auth.token = "{SERVER_TOKEN}"',
        'log.to = "console"',
        "log.disablePrintColor = true",
        'webServer.addr = "127.0.0.1"',
        "webServer.port = 7400",
        'webServer.user = "hublink"',
        'webServer.password = "admin-pass-123"',
        "[[proxies]]",
        'name = "hub"',
        'type = "tcp"',
        'localIP = "127.0.0.1"',
        "localPort = 8123",
        "remotePort = 7042",
    ]
    masked = masked_config(settings, creds)
    assert 'metadatas.token = "***"' in masked and 'auth.token = "***"' in masked
    assert 'webServer.password = "***"' in masked and "[[proxies]]" in masked


def test_http_config_uses_the_slug_as_subdomain(tmp_path: Path) -> None:
    path = write_config(_settings(tmp_path, proxy_type="http"), _creds(), "pw-123456")
    (proxy,) = tomllib.loads(path.read_text())["proxies"]
    assert proxy["type"] == "http"
    assert proxy["subdomain"] == "shop-1"
    assert "remotePort" not in proxy


def test_server_token_and_addresses_come_from_the_settings(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        server_token=SERVER_TOKEN,
        server_addr="frps.example.net",
        server_port=7100,
        admin_port=7555,
    )
    config = tomllib.loads(write_config(settings, _creds(), "pw-123456").read_text())
    assert config["auth"] == {"token": SERVER_TOKEN}
    assert (config["serverAddr"], config["serverPort"]) == ("frps.example.net", 7100)
    assert config["webServer"]["port"] == 7555


def test_a_rewrite_replaces_the_file_and_keeps_it_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = config_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("old")
    path.chmod(0o644)
    write_config(settings, _creds(), "pw-123456")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "metadatas" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["frpc.toml"]  # no temp file left


@pytest.mark.parametrize("proxy_type", ["tcp", "http"])
@pytest.mark.parametrize("server_token", [None, SERVER_TOKEN])
def test_frpc_verify_accepts_the_config(
    tmp_path: Path, frp_bin: Path, proxy_type: str, server_token: str | None
) -> None:
    settings = _settings(tmp_path, proxy_type=proxy_type, server_token=server_token)
    path = write_config(settings, _creds(), "pw-123456")
    result = subprocess.run(
        [frp_bin / "frpc", "verify", "-c", path],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "syntax is ok" in result.stdout


def _tunnel_config_cli(tmp_path: Path, *env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {
        "HUBLINK_CONFIG": str(tmp_path / "hublink.toml"),
        "HUBLINK_STATE_DIR": str(tmp_path / "state"),
        "HUBLINK_CLOUD_URL": "https://cloud.example.com",
        "PATH": "/usr/bin:/bin",
        **dict(env),
    }
    return run_hublink("tunnel-config", env=environ)


def test_tunnel_config_prints_the_config_with_secrets_masked(tmp_path: Path) -> None:
    creds = _creds()
    store = CredentialStore(tmp_path / "state")
    with store.locked():
        store.save(creds)
    result = _tunnel_config_cli(
        tmp_path,
        ("HUBLINK_TUNNEL__SERVER_TOKEN", SERVER_TOKEN),
        ("HUBLINK_TUNNEL__PROXY_TYPE", "http"),
    )
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["metadatas"]["token"] == "***"
    assert printed["auth"]["token"] == "***"
    assert printed["webServer"]["password"] == "***"
    assert printed["user"] == str(creds.hub_id)
    assert printed["proxies"][0]["subdomain"] == "shop-1"
    assert TOKEN not in result.stdout + result.stderr
    assert SERVER_TOKEN not in result.stdout + result.stderr
    assert not config_path(_settings(tmp_path)).exists()  # printing writes nothing


def test_tunnel_config_when_not_registered_exits_78(tmp_path: Path) -> None:
    result = _tunnel_config_cli(tmp_path)
    assert result.returncode == 78
    assert "not registered" in result.stderr
    assert result.stdout == ""


def test_masked_config_matches_the_written_one_but_for_secrets(tmp_path: Path) -> None:
    settings = _settings(tmp_path, server_token=SERVER_TOKEN)
    creds = _creds()
    written = tomllib.loads(write_config(settings, creds, "pw-123456").read_text())
    masked = tomllib.loads(masked_config(settings, creds))
    written["metadatas"]["token"] = written["auth"]["token"] = "***"
    written["webServer"]["password"] = "***"
    assert masked == written


# --- the pieces of the supervisor that need no frpc -----------------------------


def test_frpc_lines_are_split_into_level_source_and_run_id() -> None:
    line = parse_line(
        "2025-11-28 02:38:27.609 [W] [client/service.go:328] [02f3c10c0aeb830b] "
        "connect to server error: wrong tunnel token"
    )
    assert line.level == "warning"
    assert line.source == "client/service.go:328"
    assert line.run_id == "02f3c10c0aeb830b"
    assert line.message == "connect to server error: wrong tunnel token"
    levels = {c: parse_line(f"2025-01-01 00:00:00.000 [{c}] [a.go:1] x").level for c in "EWIDT"}
    assert levels == {"E": "error", "W": "warning", "I": "info", "D": "debug", "T": "debug"}
    assert parse_line("2025-01-01 00:00:00.000 [I] [a.go:1] no run id").run_id is None
    odd = parse_line("panic: runtime error")
    assert (odd.level, odd.message, odd.source) == ("warning", "panic: runtime error", None)


def test_the_child_environment_drops_systemd_and_hublink_variables() -> None:
    env = child_env(
        {
            "PATH": "/usr/bin",
            "NOTIFY_SOCKET": "/run/systemd/notify",
            "WATCHDOG_USEC": "30000000",
            "WATCHDOG_PID": "1",
            "HUBLINK_TUNNEL__SERVER_TOKEN": SERVER_TOKEN,
            "LANG": "C.UTF-8",
        }
    )
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8"}


def test_backoff_doubles_with_jitter_between_min_and_max_and_resets() -> None:
    backoff = Backoff(1.0, 60.0, Jitter.EQUAL, rand=random.Random(7).random)
    delays = [backoff.next() for _ in range(12)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert delays[0] == 1.0
    for attempt, delay in enumerate(delays):
        assert delay <= min(60.0, 2.0**attempt)
        assert delay >= min(60.0, 2.0**attempt) / 2
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not in lockstep
    backoff.reset()
    assert backoff.next() == 1.0
