"""``hublink support-bundle``: everything support needs in one private .tar.gz, and no secret.

The secrets are planted where a box really keeps them: the owner's password goes
through registration, the hub's token into credentials.toml, the fleet frps token
into the config file, frpc's admin password into frpc.toml; and a journal that
holds them all (frpc's own lines, an old bug) stands in for ``journalctl``. Every
member of the archive is then searched for each of them, as tests/contract/test_s04_files.py
searches every output of a hub's life.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import tarfile
import tomllib
from pathlib import Path
from uuid import uuid4

import tomli_w
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from hublink import __version__
from hublink.config import Settings, TunnelSettings
from hublink.control import status_now
from hublink.credentials import CredentialStore
from hublink.devcloud import CloudOptions, DevCloud
from hublink.tunnel.config import write_config
from support.cli import HUBLINK_COMMAND
from support.leaks import Box, find_leaks
from support.metrics import parse
from support.polling import wait_until

EMAIL = "owner@example.com"
PASSWORD = "owner-pass-" + uuid4().hex
SERVER_TOKEN = "fleet-token-" + uuid4().hex
ADMIN_PASSWORD = "frpc-admin-" + uuid4().hex
A_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl"
MEMBERS = {
    "README.txt",
    "versions.txt",
    "config.toml",
    "status.json",
    "doctor.json",
    "frpc.toml",
    "metrics.txt",
    "journal.txt",
}


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        found = {}
        for info in archive.getmembers():
            assert info.isfile() and info.mode == 0o600, info.name
            handle = archive.extractfile(info)
            assert handle is not None
            found[info.name.split("/", 1)[1]] = handle.read()
    return found


def fake_journalctl(folder: Path, lines: list[str]) -> None:
    """A ``journalctl`` that prints ``lines``, as the unit's journal would."""
    folder.mkdir()
    script = folder / "journalctl"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"assert sys.argv[1:] == ['-u', 'hublink', '-n', '2000', '--no-pager'], sys.argv\n"
        f"print({chr(10).join(lines)!r})\n"
    )
    script.chmod(0o755)


def box_env(box: Box, cloud: DevCloud, config: Path, frp_bin: Path, path: str) -> dict[str, str]:
    return {
        "PATH": path,
        "HUBLINK_CONFIG": str(config),
        "HUBLINK_CLOUD_URL": cloud.url,
        "HUBLINK_STATE_DIR": str(box.state_dir),
        "HUBLINK_RUNTIME_DIR": str(box.runtime_dir),
        "HUBLINK_LOG__LEVEL": "debug",
        "HUBLINK_TUNNEL__ENABLED": "false",
        "HUBLINK_TUNNEL__FRPC_PATH": str(frp_bin / "frpc"),
        "HUBLINK_WEBSOCKET__HEARTBEAT_INTERVAL": "0.2",
    }


async def test_the_bundle_holds_what_support_needs_and_no_secret(
    tmp_path: Path, frp_bin: Path, devcloud_signing_key: rsa.RSAPrivateKey
) -> None:
    cloud = DevCloud(
        tmp_path / "cloud",
        CloudOptions(users={EMAIL: PASSWORD}, signing_key=devcloud_signing_key),
    )
    await cloud.start()
    config = tmp_path / "hublink.toml"
    config.write_text(tomli_w.dumps({"tunnel": {"server_token": SERVER_TOKEN}}))
    box = Box(tmp_path, 0o022, {})
    box.env = box_env(box, cloud, config, frp_bin, f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    daemon = None
    try:
        await box.hublink("register", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
        token = CredentialStore(box.state_dir).load().tunnel_token.get_secret_value()
        # frpc.toml as the tunnel writes it, with this run's admin password (and the fleet token).
        settings = Settings(
            cloud_url=cloud.url,
            state_dir=box.state_dir,
            tunnel=TunnelSettings(server_token=SecretStr(SERVER_TOKEN)),
        )
        write_config(settings, CredentialStore(box.state_dir).load(), ADMIN_PASSWORD)
        fake_journalctl(
            tmp_path / "bin",
            [
                f"hublink[1]: frpc: login with token {token} and {SERVER_TOKEN}",
                f"hublink[1]: admin api password={ADMIN_PASSWORD}",
                f"hublink[1]: Authorization: Bearer {token}",
                f"hublink[1]: a JWT went by: {A_JWT}",
                "hublink[1]: link connected",
            ],
        )
        daemon = await asyncio.create_subprocess_exec(
            *HUBLINK_COMMAND, "run", env=box.env, stderr=asyncio.subprocess.DEVNULL
        )
        await wait_until(lambda: cloud.heartbeats(CredentialStore(box.state_dir).load().hub_id))
        # Its control socket opens last, after the link: the bundle asks it for status.
        await wait_until(
            lambda: asyncio.to_thread(status_now, box.runtime_dir / "control.sock"),
            what="the daemon to answer on its control socket",
        )

        out = await box.hublink("support-bundle", "--output", "bundle.tar.gz")
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.terminate()
            await daemon.wait()
        await cloud.stop()

    path = tmp_path / "bundle.tar.gz"
    assert str(path) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = members(path)
    assert set(found) == MEMBERS
    box.seen.update({f"bundle {name}": data for name, data in found.items()})
    assert not find_leaks(box.seen, [token, PASSWORD, SERVER_TOKEN, ADMIN_PASSWORD])

    versions = found["versions.txt"].decode()
    assert f"hublink {__version__}" in versions
    assert f"Python CPython {sys.version.split()[0]}" in versions
    assert f"frpc 0.65.0 ({frp_bin / 'frpc'})" in versions
    assert "PRETTY_NAME=" in versions  # /etc/os-release
    effective = tomllib.loads(found["config.toml"].decode())
    assert effective["tunnel"]["server_token"] == "***"
    assert effective["state_dir"] == str(box.state_dir)
    status = json.loads(found["status.json"])
    assert status["daemon"]["running"] and status["websocket"]["state"] == "connected"
    assert "config" in {check["name"] for check in json.loads(found["doctor.json"])["checks"]}
    frpc = tomllib.loads(found["frpc.toml"].decode().split("\n", 2)[2])
    assert frpc["metadatas"]["token"] == frpc["webServer"]["password"] == "***"
    assert frpc["auth"]["token"] == "***"
    assert frpc["user"] == status["hub_id"]
    assert parse(found["metrics.txt"].decode()).value("hublink_link_up") == 1
    journal = found["journal.txt"].decode()
    assert "link connected" in journal
    assert "login with token *** and ***" in journal
    assert "Bearer ***" in journal
    assert "Not collected" not in found["README.txt"].decode()


async def test_without_a_daemon_or_journalctl_the_bundle_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    box = Box(tmp_path, 0o022, {})
    box.env = {
        "PATH": str(empty),
        "HUBLINK_CONFIG": str(tmp_path / "hublink.toml"),
        "HUBLINK_STATE_DIR": str(box.state_dir),
        "HUBLINK_RUNTIME_DIR": str(box.runtime_dir),
    }
    await box.hublink("support-bundle")  # the default name, in the current folder
    [path] = tmp_path.glob("hublink-support-*.tar.gz")
    found = members(path)
    assert set(found) == MEMBERS
    readme = found["README.txt"].decode()
    assert "metrics: no daemon answered" in readme
    assert "journalctl is not installed" in readme
    assert found["journal.txt"].startswith(b"# journalctl is not installed")
    assert json.loads(found["status.json"])["daemon"]["running"] is False
    assert b"frpc: frpc not found" in found["versions.txt"]

    # An existing file is never replaced without --force.
    before = path.read_bytes()
    await box.hublink("support-bundle", "--output", path.name, code=1)
    assert (
        "exists already"
        in box.seen[f"`hublink support-bundle --output {path.name}` stderr"].decode()
    )
    assert path.read_bytes() == before
    await box.hublink("support-bundle", "--output", path.name, "--force")
    assert path.read_bytes() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_config_that_does_not_load_still_makes_a_bundle_without_its_secret(
    tmp_path: Path,
) -> None:
    config = tmp_path / "hublink.toml"
    # A section-level error, whose section holds the fleet token.
    config.write_text(
        tomli_w.dumps(
            {"tunnel": {"server_token": SERVER_TOKEN, "restart_min": 9, "restart_max": 1}}
        )
    )
    box = Box(tmp_path, 0o022, {"PATH": os.environ["PATH"], "HUBLINK_CONFIG": str(config)})
    await box.hublink("support-bundle", "--output", "b.tar.gz")
    found = members(tmp_path / "b.tar.gz")
    assert {"README.txt", "versions.txt", "config.toml", "doctor.json"} <= set(found)
    assert "restart_min must not be greater" in found["config.toml"].decode()
    assert json.loads(found["doctor.json"])["checks"][0]["status"] == "fail"
    box.seen.update({f"bundle {name}": data for name, data in found.items()})
    assert not find_leaks(box.seen, [SERVER_TOKEN])
