"""Contract section 4, files on disk: every file private, no secret where it does not belong,
writes atomic, a broken credentials file named and never overwritten.

First a hub's whole life, as an outsider would check it. One run per umask
(000 and 022) and log format (json and console), at debug level: register,
send, backup to a file and to the Cloud, restore, the daemon with its real
frpc (fleet-wide frps token in the config file), a hook, a backup request,
status, doctor, tunnel-config, and error paths where the Cloud echoes every
secret back (a 401 on upload, a 500 on the link's handshake). Then: the
owner's password, the hub's token, the fleet token, the frpc admin password
and any JWT appear in no output, no log line, no /proc cmdline or environ of a
child, and no file but the three that must hold them; and every file hublink
wrote has its contract mode (contract sections 3, 4 and 7).
Then the credentials file: a failed write leaves the old one intact, and one
that cannot be parsed is named by ``register``, ``run`` and ``status``, exit 78.
Last, faults of the disk: a corrupt outbox at start is moved aside and the hub
links; a full state dir (a real small tmpfs) keeps the link up, names the disk,
and the backup's answer still reaches the Cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import stat
import sys
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric import rsa

from hublink.control import status_now
from hublink.devcloud import CloudOptions, DevCloud
from hublink.devcloud.ports import free_port, free_port_range
from hublink.link.outbox import Outbox
from support.backup import make_database
from support.cli import HUBLINK_COMMAND, HubBox, make_child_env, run_hublink
from support.cloud import HubEnv, make_hub_env
from support.daemon import Daemons
from support.leaks import JWT, Box
from support.outbox import PLUGIN, make_plugin_event
from support.polling import wait_until
from support.smallfs import fill, small_filesystem
from support.timing import scaled

EMAIL = "owner@example.com"
PASSWORD = "owner-pass-" + uuid4().hex
SERVER_TOKEN = "fleet-token-" + uuid4().hex

#: Where the secrets may be: nowhere else.
SECRET_FILES = {"credentials.toml", "frpc.toml", "backup-identity.txt", "web-code"}

HOOK = """
import os, sys
out = sys.argv[1]
for name in ("environ", "cmdline"):
    with open(f"/proc/{os.getpid()}/{name}", "rb") as src, open(f"{out}/hook-{name}", "wb") as dst:
        dst.write(src.read())
sys.stdin.read()
"""


@contextlib.asynccontextmanager
async def fleet_frps(frp_bin: Path, cloud: DevCloud) -> AsyncIterator[int]:
    """A real frps that wants the fleet-wide token and asks ``cloud``'s plugin; its port."""
    port = free_port()
    low, high = cloud.port_range
    config = cloud.data_dir / "fleet-frps.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "bindAddr": "127.0.0.1",
                "bindPort": port,
                "proxyBindAddr": "127.0.0.1",
                "allowPorts": [{"start": low, "end": high}],
                "auth": {"token": SERVER_TOKEN},
                "httpPlugins": [
                    {
                        "name": "cloud",
                        "addr": f"127.0.0.1:{cloud.port}",
                        "path": "/frps/plugin/",
                        "ops": ["Login", "NewProxy"],
                    }
                ],
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        str(frp_bin / "frps"), "-c", str(config), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        yield port
    finally:
        proc.terminate()
        await proc.wait()


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in folder.iterdir()}


@pytest.mark.parametrize(("umask", "fmt"), [(0o000, "json"), (0o022, "console")])
async def test_no_secret_anywhere_and_every_file_private(
    tmp_path: Path,
    frp_bin: Path,
    devcloud_signing_key: rsa.RSAPrivateKey,
    umask: int,
    fmt: str,
) -> None:
    cloud = DevCloud(
        tmp_path / "cloud",
        CloudOptions(
            users={EMAIL: PASSWORD},
            port_range=free_port_range(2),
            signing_key=devcloud_signing_key,
        ),
        frps_path=frp_bin / "frps",  # for the plugin routes; the fleet frps is ours
    )
    await cloud.start()
    try:
        async with fleet_frps(frp_bin, cloud) as frps_port:
            await _life(tmp_path, cloud, frp_bin, frps_port, umask, fmt)
    finally:
        await cloud.stop()


async def _life(
    base: Path, cloud: DevCloud, frp_bin: Path, frps_port: int, umask: int, fmt: str
) -> None:
    database = base / "shop.sqlite3"
    make_database(database, rows=200)
    (base / "hook.py").write_text(HOOK)
    config = base / "hublink.toml"
    config.write_text(tomli_w.dumps({"tunnel": {"server_token": SERVER_TOKEN}}))
    box = Box(base, umask, {})
    box.env = {
        "PATH": os.environ["PATH"],
        "HUBLINK_CONFIG": str(config),
        "HUBLINK_CLOUD_URL": cloud.url,
        "HUBLINK_STATE_DIR": str(box.state_dir),
        "HUBLINK_RUNTIME_DIR": str(box.runtime_dir),
        "HUBLINK_LOG__LEVEL": "debug",
        "HUBLINK_LOG__FORMAT": fmt,
        "HUBLINK_HUB__NAME": "Leak Test Shop",
        "HUBLINK_BACKUP__DATABASE": str(database),
        "HUBLINK_TUNNEL__FRPC_PATH": str(frp_bin / "frpc"),
        "HUBLINK_TUNNEL__SERVER_ADDR": "127.0.0.1",
        "HUBLINK_TUNNEL__SERVER_PORT": str(frps_port),
        "HUBLINK_TUNNEL__ADMIN_PORT": str(free_port()),
        "HUBLINK_TUNNEL__RESTART_MIN": str(scaled(0.2)),
        "HUBLINK_TUNNEL__RESTART_MAX": str(scaled(1)),
        "HUBLINK_WEBSOCKET__HEARTBEAT_INTERVAL": str(scaled(0.2)),
        "HUBLINK_WEBSOCKET__RECONNECT_MIN": str(scaled(0.05)),
        "HUBLINK_WEBSOCKET__RECONNECT_MAX": str(scaled(0.3)),
        "HUBLINK_WEBSOCKET__RECONNECT_SPREAD": str(scaled(0.1)),
        "HUBLINK_WEB__LISTEN": "127.0.0.1:0",
        "HUBLINK_HOOKS": json.dumps(
            {"user_revoked": [sys.executable, str(base / "hook.py"), str(base)]}
        ),
    }
    out = base / "out"
    out.mkdir()

    await box.hublink("register", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    creds = tomllib.loads((box.state_dir / "credentials.toml").read_text())
    token, hub_id = creds["tunnel_token"], creds["hub_id"]
    data = {"plugin_id": "inventory", "version": "1.0", "installed_at": "2026-01-01T00:00:00Z"}
    await box.hublink("send", "plugin_installed", "--data", json.dumps(data))
    await box.hublink("backup", "--output", str(out / "b.db.zst.age"))
    backup_file = out / "b.db.zst.age"
    restored = out / "restored.sqlite3"
    identity = box.state_dir / "backup-identity.txt"
    await box.hublink(
        "restore", str(backup_file), "--identity", str(identity), "--output", str(restored)
    )
    admin_passwords, running_modes = await _run_daemon(box, cloud, hub_id, token)

    secrets = [token, PASSWORD, SERVER_TOKEN, *admin_passwords]
    # The page's setup code: `hublink status` shows it to whoever can read web-code
    # (here, the owner of the box), but no log line ever holds it.
    code = (box.state_dir / "web-code").read_text().strip()
    assert code.encode() not in box.seen["daemon log"]
    for path in box.state_dir.iterdir():
        if path.name != "web-code":
            assert code.encode() not in path.read_bytes(), f"{path} holds the setup code"
    for where, text in box.seen.items():
        leaked = [s for s in secrets if s.encode() in text]
        assert not leaked, f"{where} holds a secret"
        assert not JWT.search(text), f"{where} holds a JWT"
    for path in box.state_dir.iterdir():
        if path.name not in SECRET_FILES:
            content = path.read_bytes()
            assert not [s for s in secrets if s.encode() in content], f"{path} holds a secret"

    # Files: contract section 4 modes, whatever the umask; folders never open to others.
    assert set(_modes(box.state_dir).values()) == {0o600}, _modes(box.state_dir)
    assert SECRET_FILES | {"outbox.sqlite3"} <= set(_modes(box.state_dir))
    assert stat.S_IMODE(box.state_dir.stat().st_mode) == 0o700
    for parent in (base / "var", base / "var" / "lib", base / "run"):
        assert not stat.S_IMODE(parent.stat().st_mode) & 0o022, parent
    assert running_modes["runtime_dir"] == 0o750
    assert running_modes["control.sock"] == 0o660
    assert set(running_modes["state_dir"].values()) == {0o600}, running_modes
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["b.db.zst.age", "restored.sqlite3"]


async def _run_daemon(
    box: Box, cloud: DevCloud, hub_id: str, token: str
) -> tuple[set[str], dict[str, Any]]:
    """``hublink run`` through its paces; the admin passwords it used, and modes seen."""
    log = box.base / "daemon.log"
    sock = box.runtime_dir / "control.sock"
    with log.open("wb") as log_file:
        daemon = await asyncio.create_subprocess_exec(
            *HUBLINK_COMMAND,
            "run",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=box.env,
            umask=box.umask,
        )
    try:

        def status() -> dict[str, object] | None:
            assert daemon.returncode is None, log.read_text()
            return status_now(sock)

        async def wait_status(check: Callable[[Any], bool], what: str) -> Any:
            def ok() -> dict[str, object] | None:
                current = status()
                return current if current is not None and check(current) else None

            return await wait_until(ok, timeout=30, what=what)

        now = await wait_status(lambda s: s["tunnel"]["state"] == "running", "tunnel")
        await wait_status(lambda s: s["websocket"]["state"] == "connected", "link")
        frpc_pid = now["tunnel"]["pid"]
        for name in ("cmdline", "environ"):
            box.seen[f"frpc {name}"] = Path(f"/proc/{frpc_pid}/{name}").read_bytes()
        admin = tomllib.loads((box.state_dir / "frpc.toml").read_text())["webServer"]["password"]

        revoked = {"type": "user_revoked", "user_id": "7", "email": "x@y.z", "reason": "left"}
        assert await cloud.push(hub_id, revoked)
        for name in ("hook-cmdline", "hook-environ"):
            await wait_until((box.base / name).exists, timeout=30, what=name)
        assert await cloud.push(hub_id, {"type": "backup_request", "requested_by": EMAIL})
        await wait_until(lambda: cloud.backup_records(hub_id), timeout=30, what="upload")

        await box.hublink("status", "--json")
        await box.hublink("status")
        await box.hublink("doctor", code=1)  # nothing listens on hub.local_port
        await box.hublink("tunnel-config")
        await box.hublink("backup")
        # The Cloud echoes back, in its error bodies, every secret the process knows.
        echo = json.dumps({"detail": f"bad {token}, fleet token {SERVER_TOKEN}"})
        cloud.fail_next("/api/hubs/", 401, body=echo)
        await box.hublink("backup", code=77)
        echo = json.dumps({"detail": f"bad {token} {SERVER_TOKEN} {admin}"})
        cloud.fail_next(f"/ws/hub/{hub_id}/", 500, count=2, body=echo)
        reconnects = now["websocket"]["reconnects"]
        await cloud.close_hub(hub_id, 1012)
        await wait_status(
            lambda s: (
                s["websocket"]["state"] == "connected" and s["websocket"]["reconnects"] > reconnects
            ),
            "the link back after the refused handshakes",
        )
        modes: dict[str, Any] = {
            "runtime_dir": stat.S_IMODE(box.runtime_dir.stat().st_mode),
            "control.sock": stat.S_IMODE(sock.stat().st_mode),
            "state_dir": _modes(box.state_dir),
        }
    finally:
        if daemon.returncode is None:
            daemon.terminate()
        code = await asyncio.wait_for(daemon.wait(), scaled(15))
    assert code == 0, log.read_text()
    box.seen["daemon log"] = log.read_bytes()
    for name in ("cmdline", "environ"):
        box.seen[f"hook {name}"] = (box.base / f"hook-{name}").read_bytes()
    assert b"frpc" in box.seen["daemon log"] and b"admin_api" in box.seen["daemon log"]
    return {admin}, modes


# --- the credentials file: atomic writes, named when broken, never overwritten -----------


async def test_corrupt_credentials_exit_78_naming_the_file(devcloud: DevCloud, box: HubBox) -> None:
    box.state_dir.mkdir(mode=0o700)
    box.credentials.write_text('hub_id = "not-a-uuid"\n')
    run = await box.register()
    assert run.code == 78
    assert str(box.credentials) in run.stderr
    assert "hub_id" in run.stderr
    assert box.credentials.read_text() == 'hub_id = "not-a-uuid"\n'
    assert devcloud.hubs() == []


def limit_file_size() -> None:
    """In the child: any file write beyond 64 bytes fails (EFBIG), mid-way through the data."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


async def test_failed_credential_write_leaves_the_old_file_intact(
    devcloud: DevCloud, box: HubBox
) -> None:
    assert (await box.register()).code == 0
    before = box.credentials.read_bytes()
    assert len(before) > 64
    run = await box.register("--force", preexec_fn=limit_file_size)
    assert run.code == 78
    assert f"could not write {box.credentials}" in run.stderr
    assert box.credentials.read_bytes() == before
    assert not [n for n in box.written() if n.endswith(".tmp")]  # no temporary file left


async def test_run_with_unreadable_credentials_exits_78_naming_the_file(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = make_hub_env(devcloud, tmp_path / "h")
    hub.settings.credentials_path.write_text("hub_id = [not toml")
    daemon = await daemons.start(hub)
    assert await daemon.wait_exit() == 78
    assert str(hub.settings.credentials_path) in daemon.log_text()


def test_unreadable_credentials_exit_78(hub: HubEnv) -> None:
    hub.settings.credentials_path.write_text("tunnel_token = ")
    result = run_hublink("status", env=make_child_env(hub.settings))
    assert result.returncode == 78
    assert str(hub.settings.credentials_path) in result.stderr


# --- a corrupt outbox, a full state dir -------------------------------------------------------


async def test_a_corrupt_outbox_at_start_is_moved_aside_and_the_hub_links(
    hub: HubEnv, daemons: Daemons
) -> None:
    state_dir = hub.settings.state_dir
    garbage = os.urandom(4096)  # head -c 4096 /dev/urandom > outbox.sqlite3
    (state_dir / "outbox.sqlite3").write_bytes(garbage)
    daemon = await daemons.start()
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert status["outbox"] == {"pending": 0, "dead_letters": 0, "quarantined": 1}
    [aside] = state_dir.glob("outbox.sqlite3.corrupt-*Z")
    assert aside.read_bytes() == garbage
    [error] = [e for e in daemon.log_events() if e.get("moved_to") == str(aside)]
    assert error["level"] == "error"
    sent = daemon.run_cli("send", "plugin_installed", "--data", json.dumps(PLUGIN))
    assert sent.returncode == 0, sent.stderr
    await wait_until(lambda: hub.cloud.events(hub.hub_id), what="the event")
    assert "1 damaged outbox file" in daemon.run_cli("status").stdout


@pytest.fixture
def full_disk_hub(hub: HubEnv, tmp_path: Path) -> Any:
    """A hub whose state dir is a small tmpfs (its log file stays outside it)."""
    base = tmp_path / "small"
    state = base / "state"
    with small_filesystem(state, size="6m"):
        database = tmp_path / "hub.sqlite3"
        with sqlite3.connect(database) as conn:
            conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
            conn.executemany("INSERT INTO sales (total) VALUES (?)", [(n,) for n in range(2000)])
        yield make_hub_env(hub.cloud, base, name="Full Disk", backup={"database": database})


async def test_a_full_state_dir_keeps_the_link_up_and_names_the_disk(
    full_disk_hub: HubEnv, daemons: Daemons
) -> None:
    hub = full_disk_hub
    cloud, hub_id, state = hub.cloud, hub.hub_id, hub.settings.state_dir
    port = cloud.port
    daemon = await daemons.start(hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    await cloud.stop()
    outbox = Outbox.open(state)
    ids = [outbox.put(make_plugin_event(n)) for n in range(20)]
    outbox.close()
    filler = fill(state)
    await cloud.start(port=port)
    status = await daemon.wait_status(
        lambda s: (
            s["websocket"]["state"] == "connected"
            and "full" in (s["websocket"]["last_error"] or "")
        ),
        timeout=30,
    )
    assert "cannot be removed from the outbox" in status["websocket"]["last_error"]
    assert "database or disk is full" in daemon.run_cli("status").stdout
    await wait_until(lambda: len(cloud.events(hub_id)) >= 20, what="the 20 events")
    assert [e["id"] for e in cloud.events(hub_id)] == ids
    # The link stays up: heartbeats and commands keep flowing.
    seen = len(cloud.heartbeats(hub_id))
    await wait_until(lambda: len(cloud.heartbeats(hub_id)) >= seen + 5, what="heartbeats")
    command = {"type": "user_revoked", "user_id": "u-1", "email": "a@b.c", "reason": "left"}
    assert await cloud.push(hub_id, command)
    await daemon.wait_status(lambda s: [u["user_id"] for u in s["revoked_users"]] == ["u-1"])
    assert cloud.connections(hub_id) == 2  # before and after the Cloud's restart, no more
    # Bounded: each event went out once on this link, however long the disk stays full.
    frames = [f["data"] for f in cloud.frames(hub_id) if isinstance(f["data"], str)]
    assert all(sum(event_id in frame for frame in frames) == 1 for event_id in ids)
    assert not daemon.crashes()
    # Room again: the delivered events leave the outbox and the error clears.
    filler.unlink()
    await daemon.wait_status(
        lambda s: s["outbox"]["pending"] == 0 and s["websocket"]["last_error"] is None, timeout=30
    )


async def test_a_backup_answer_reaches_the_cloud_when_the_state_dir_is_full(
    full_disk_hub: HubEnv, daemons: Daemons
) -> None:
    hub = full_disk_hub
    cloud, hub_id = hub.cloud, hub.hub_id
    daemon = await daemons.start(hub)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    fill(hub.settings.state_dir)
    assert await cloud.push(hub_id, {"type": "backup_request", "requested_by": "owner-7"})
    await wait_until(
        lambda: [e for e in cloud.events(hub_id) if e["type"] == "backup_failed"],
        what="the backup_failed answer",
    )
    [answer] = [e for e in cloud.events(hub_id) if e["type"] == "backup_failed"]
    assert answer["requested_by"] == "owner-7"
    assert answer["error"]
    assert any(e["event"].startswith("cannot queue the answer") for e in daemon.log_events())
    assert not daemon.crashes()
