"""`hublink doctor`: all checks pass on a healthy hub; each failure is reported with a hint."""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from hublink.config import BackupSettings, HubSettings, Settings, TlsSettings, TunnelSettings
from hublink.credentials import CredentialStore
from hublink.devcloud.ports import free_port
from hublink.doctor import Check, Report, run_checks
from support.cloud import HubEnv
from support.network import Listeners

PATIENCE = 5.0


def by_name(report: Report) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


def assert_failed(check: Check, *words: str) -> None:
    assert check.status == "fail", check
    assert check.hint, check
    for word in words:
        assert word in check.detail, check


async def doctor(settings: Settings) -> dict[str, Check]:
    return by_name(await run_checks(settings, patience=PATIENCE))


def with_(settings: Settings, **update: Any) -> Settings:
    """A copy of frozen settings with some fields replaced (validated again)."""
    return Settings(**(settings.model_dump() | update))


# --- healthy ---------------------------------------------------------------------


async def test_healthy_hub_passes_every_check_but_the_absent_daemon(
    hub: HubEnv, frp_bin: Path, listeners: Listeners
) -> None:
    settings = with_(
        hub.settings,
        tunnel=TunnelSettings(
            enabled=True,
            frpc_path=str(frp_bin / "frpc"),
            server_addr="127.0.0.1",
            server_port=await listeners.open(),
        ),
        hub=HubSettings(local_port=await listeners.open()),
    )
    checks = await doctor(settings)
    assert {name: check.status for name, check in checks.items()} == {
        "config": "pass",
        "credentials": "pass",
        "state_dir": "pass",
        "runtime_dir": "pass",
        "disk_space": "pass",
        "backup_database": "skip",  # backup.database not set
        "cloud": "pass",
        "tls": "skip",  # plain http to loopback: the reference Cloud
        "clock": "pass",
        "websocket": "pass",
        "frpc": "pass",
        "frps": "pass",
        "local_port": "pass",
        "daemon": "fail",
        "page": "pass",  # no daemon, and web.listen (port 0) can be bound
    }
    assert "0.65.0" in checks["frpc"].detail
    assert hub.hub_id in checks["credentials"].detail
    # The handshake really happened, and closed cleanly.
    assert hub.cloud.connections(hub.hub_id) == 1
    assert_failed(checks["daemon"], "no daemon answers")
    assert "systemctl start hublink" in (checks["daemon"].hint or "")


# --- the Cloud ---------------------------------------------------------------------


async def test_unreachable_cloud(hub: HubEnv) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    checks = await doctor(with_(hub.settings, cloud_url=url))
    assert_failed(checks["cloud"], "cannot be reached", "connection refused")
    assert checks["clock"].status == "skip"
    assert_failed(checks["websocket"], "handshake failed")
    # Registered with another Cloud than the one configured now.
    assert checks["credentials"].status == "warn"


async def test_wrong_token_is_refused_at_the_handshake(hub: HubEnv) -> None:
    store = CredentialStore(hub.settings.state_dir)
    wrong = hub.creds.model_copy(update={"tunnel_token": SecretStr("not-the-token")})
    with store.locked():
        store.save(wrong)
    checks = await doctor(hub.settings)
    assert_failed(checks["websocket"], "refused", "HTTP 401")
    assert "register --force" in (checks["websocket"].hint or "")
    assert "not-the-token" not in json.dumps([c.__dict__ for c in checks.values()])


async def test_revoked_hub_is_refused(hub: HubEnv) -> None:
    await hub.cloud.revoke(hub.hub_id)
    checks = await doctor(hub.settings)
    assert_failed(checks["websocket"], "HTTP 403")


# --- a stand-in Cloud for what the reference one does not do -----------------------


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def serve_public_key(
    body: dict[str, Any] | str, *, date: datetime | None = None, tls: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    async def public_key(_request: web.Request) -> web.Response:
        headers = {"Date": format_datetime(date, usegmt=True)} if date else {}
        if isinstance(body, str):
            return web.Response(text=body, content_type="text/html", headers=headers)
        return web.json_response(body, headers=headers)

    app = web.Application()
    app.router.add_get("/api/auth/public-key/", public_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


async def test_clock_far_from_the_clouds_is_a_failure(tmp_path: Path) -> None:
    behind = datetime.now(UTC) + timedelta(minutes=7)
    runner, port = await serve_public_key(
        {"public_key": rsa_pem(), "algorithm": "RS256"}, date=behind
    )
    try:
        checks = await doctor(Settings(cloud_url=f"http://127.0.0.1:{port}", state_dir=tmp_path))
    finally:
        await runner.cleanup()
    assert checks["cloud"].status == "pass"
    assert_failed(checks["clock"], "7 min", "behind")
    assert "timedatectl" in (checks["clock"].hint or "")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("<html><title>Bad gateway</title></html>", "not a public key"),
        ({"public_key": "-----BEGIN PUBLIC KEY-----\nxx\n", "algorithm": "RS256"}, "PEM"),
        ({"public_key": "x", "algorithm": "HS256"}, "HS256"),
        ("ec", "not an RSA key"),
    ],
)
async def test_a_public_key_hublink_cannot_use(
    tmp_path: Path, body: dict[str, Any] | str, words: str
) -> None:
    if body == "ec":
        ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        pem = ec_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        body = {"public_key": pem, "algorithm": "RS256"}
    runner, port = await serve_public_key(body)
    try:
        checks = await doctor(Settings(cloud_url=f"http://127.0.0.1:{port}", state_dir=tmp_path))
    finally:
        await runner.cleanup()
    assert_failed(checks["cloud"], words)


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_certificate_not_trusted_then_trusted_through_ca_file(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    runner, port = await serve_public_key(
        {"public_key": rsa_pem(), "algorithm": "RS256"}, tls=server_tls
    )
    try:
        base = Settings(cloud_url=f"https://localhost:{port}", state_dir=tmp_path)
        untrusted = await doctor(base)
        trusted = await doctor(with_(base, tls=TlsSettings(ca_file=ca_file)))
    finally:
        await runner.cleanup()
    assert_failed(untrusted["tls"], "does not verify", "certificate")
    assert "tls.ca_file" in (untrusted["tls"].hint or "")
    assert_failed(untrusted["cloud"], "TLS")
    assert trusted["tls"].status == "pass"
    assert trusted["cloud"].status == "pass"


# --- the tunnel ----------------------------------------------------------------------


def tunnel(frpc_path: str, frps_port: int) -> TunnelSettings:
    return TunnelSettings(
        enabled=True, frpc_path=frpc_path, server_addr="127.0.0.1", server_port=frps_port
    )


async def test_frpc_missing_not_executable_and_too_old(tmp_path: Path) -> None:
    base = Settings(cloud_url=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path)
    missing = await doctor(with_(base, tunnel=tunnel(str(tmp_path / "nope" / "frpc"), 7000)))
    assert_failed(missing["frpc"], "not found")
    assert "tunnel.frpc_path" in (missing["frpc"].hint or "")

    not_exec = tmp_path / "frpc-noexec"
    not_exec.write_text("#!/bin/sh\necho 0.65.0\n")
    checks = await doctor(with_(base, tunnel=tunnel(str(not_exec), 7000)))
    assert_failed(checks["frpc"], "not executable")

    old = tmp_path / "frpc"
    old.write_text("#!/bin/sh\necho 0.51.0\n")
    old.chmod(0o755)
    checks = await doctor(with_(base, tunnel=tunnel(str(old), 7000)))
    assert_failed(checks["frpc"], "0.51.0", "0.52")


async def test_frpc_found_on_path_by_name(
    tmp_path: Path, frp_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{frp_bin}{os.pathsep}{os.environ['PATH']}")
    base = Settings(cloud_url=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path)
    checks = await doctor(with_(base, tunnel=tunnel("frpc", 7000)))
    assert checks["frpc"].status == "pass"
    assert str(frp_bin / "frpc") in checks["frpc"].detail


async def test_frps_and_local_port_not_listening(tmp_path: Path, frp_bin: Path) -> None:
    settings = Settings(
        cloud_url=f"http://127.0.0.1:{free_port()}",
        state_dir=tmp_path,
        tunnel=tunnel(str(frp_bin / "frpc"), free_port()),
        hub=HubSettings(local_port=free_port()),
    )
    checks = await doctor(settings)
    assert_failed(checks["frps"], "does not accept connections", "connection refused")
    assert_failed(checks["local_port"], "nothing listens", str(settings.hub.local_port))
    # Without a tunnel the Hub's port matters less, and frp not at all.
    checks = await doctor(with_(settings, tunnel=TunnelSettings(enabled=False)))
    assert checks["local_port"].status == "warn"
    assert checks["frpc"].status == checks["frps"].status == "skip"


# --- credentials and folders --------------------------------------------------------


async def test_not_registered(tmp_path: Path) -> None:
    checks = await doctor(Settings(cloud_url=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path))
    assert_failed(checks["credentials"], "not registered")
    assert "hublink register" in (checks["credentials"].hint or "")
    assert checks["websocket"].status == "skip"


async def test_loose_credentials_mode(hub: HubEnv) -> None:
    hub.settings.credentials_path.chmod(0o644)
    checks = await doctor(hub.settings)
    assert_failed(checks["credentials"], "0644", "0600")
    assert f"chmod 600 {hub.settings.credentials_path}" in (checks["credentials"].hint or "")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
async def test_credentials_owned_by_another_user(hub: HubEnv) -> None:
    os.chown(hub.settings.credentials_path, 65534, 65534)
    checks = await doctor(hub.settings)
    assert_failed(checks["credentials"], "owned by")


async def test_unparseable_credentials(hub: HubEnv) -> None:
    hub.settings.credentials_path.write_text("hub_id = [unterminated")
    checks = await doctor(hub.settings)
    assert_failed(checks["credentials"], "not valid TOML")
    assert checks["websocket"].status == "skip"


async def test_missing_state_dir(tmp_path: Path) -> None:
    settings = Settings(
        cloud_url=f"http://127.0.0.1:{free_port()}",
        state_dir=tmp_path / "absent",
        runtime_dir=tmp_path / "absent-run",
    )
    checks = await doctor(settings)
    assert_failed(checks["state_dir"], "does not exist")
    assert checks["runtime_dir"].status == "warn"


def make_database(path: Path, journal_mode: str) -> Path:
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total REAL)")
    connection.execute("INSERT INTO sales (total) VALUES (9.5)")
    connection.commit()
    connection.close()
    return path


@pytest.mark.parametrize(("journal_mode", "shown"), [("wal", "WAL"), ("delete", "rollback")])
async def test_backup_database_reads(tmp_path: Path, journal_mode: str, shown: str) -> None:
    database = make_database(tmp_path / "hub.sqlite3", journal_mode)
    settings = Settings(
        cloud_url=f"http://127.0.0.1:{free_port()}",
        state_dir=tmp_path / "state",
        backup=BackupSettings(database=database),
    )
    checks = await doctor(settings)
    assert checks["backup_database"].status == "pass"
    assert shown in checks["backup_database"].detail


async def test_backup_database_missing_or_not_sqlite(tmp_path: Path) -> None:
    base = Settings(cloud_url=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path)
    missing = await doctor(with_(base, backup=BackupSettings(database=tmp_path / "nope.db")))
    assert_failed(missing["backup_database"], "does not exist")
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database, it is a shopping list")
    checks = await doctor(with_(base, backup=BackupSettings(database=junk)))
    assert_failed(checks["backup_database"], "not a SQLite database")


async def test_backup_database_that_cannot_be_opened(tmp_path: Path) -> None:
    # A folder where the file should be: open() fails as it would for a file
    # the service user may not read (root, running the tests, may read anything).
    folder = tmp_path / "hub.sqlite3"
    folder.mkdir()
    settings = Settings(
        cloud_url=f"http://127.0.0.1:{free_port()}",
        state_dir=tmp_path / "state",
        backup=BackupSettings(database=folder),
    )
    checks = await doctor(settings)
    assert_failed(checks["backup_database"], "cannot be read by", "is a directory")
    assert "drop-in" in (checks["backup_database"].hint or "")
