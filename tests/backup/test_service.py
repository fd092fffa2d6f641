"""Backups on request against the reference Cloud: upload, retries, refusals, one at a time
(contract sections 1, 2 and 7)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from hublink.backup.service import BackupService
from hublink.cloud.client import make_session
from hublink.config import BackupSettings
from hublink.devcloud import DevCloud
from hublink.link.messages import BackupCompleted, BackupFailed
from hublink.retry import RetryPolicy
from support.backup import (
    list_temp_leftovers,
    make_database,
    read_database_facts,
    restore_with_age_and_zstd,
)
from support.cli import run_hublink
from support.cloud import HubEnv, make_hub_env
from support.polling import wait_until
from support.timing import scaled

#: Quick retries: the behaviour is the real one, only the waits shrink.
FAST_UPLOAD = RetryPolicy(
    attempts=4,
    deadline=None,
    backoff_base=0.01,
    backoff_max=0.05,
    connect_timeout=2.0,
    request_timeout=20.0,
)
FILENAME = re.compile(r"^hub-[a-z0-9-]+-\d{8}T\d{6}Z\.db\.zst\.age$")


@pytest.fixture
def hub(devcloud: DevCloud, tmp_path: Path) -> HubEnv:
    """An enrolled hub whose Hub database holds 3000 rows."""
    db = tmp_path / "hub.sqlite3"
    make_database(db, rows=3000)
    return make_hub_env(devcloud, tmp_path, backup=BackupSettings(database=db))


@pytest.fixture
async def session(hub: HubEnv) -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session(hub.settings) as session:
        yield session


def service(hub: HubEnv, session: aiohttp.ClientSession, **creds_changes: object) -> BackupService:
    creds = hub.creds.model_copy(update=creds_changes) if creds_changes else hub.creds
    return BackupService(hub.settings, creds, session, upload_policy=FAST_UPLOAD)


async def test_backup_request_uploads_a_backup_the_standard_tools_restore(
    hub: HubEnv, session: aiohttp.ClientSession, age_bin: str, tmp_path: Path
) -> None:
    answer = await service(hub, session).run_requested("owner@example.com")

    assert isinstance(answer, BackupCompleted), answer
    assert answer.requested_by == "owner@example.com"
    assert FILENAME.match(answer.filename)
    assert hub.creds.slug in answer.filename
    [record] = hub.cloud.backup_records(hub.hub_id)
    assert record.backup_id == answer.backup_id
    stored = record.path.read_bytes()
    assert (answer.size, answer.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert record.filename == answer.filename

    identity = hub.settings.state_dir / "backup-identity.txt"
    by_tools = tmp_path / "by-tools.sqlite3"
    restore_with_age_and_zstd(age_bin, identity, record.path, by_tools)
    assert read_database_facts(by_tools)[:2] == ("ok", 3000)
    by_hublink = tmp_path / "by-hublink.sqlite3"
    result = run_hublink(
        "restore", str(record.path), "--identity", str(identity), "--output", str(by_hublink)
    )
    assert result.returncode == 0, result.stderr
    assert read_database_facts(by_hublink)[:2] == ("ok", 3000)
    assert list_temp_leftovers(hub.settings.state_dir) == []


async def test_rejected_credential_answers_backup_failed(
    hub: HubEnv, session: aiohttp.ClientSession
) -> None:
    answer = await service(hub, session, tunnel_token=SecretStr("not-the-token")).run_requested(
        "owner@example.com"
    )

    assert isinstance(answer, BackupFailed)
    assert "the Cloud rejected this hub's credential (HTTP 403" in answer.error
    assert "not-the-token" not in answer.error
    assert hub.cloud.backups(hub.hub_id) == []
    assert list_temp_leftovers(hub.settings.state_dir) == []


async def test_server_errors_are_retried_until_the_upload_succeeds(
    hub: HubEnv, session: aiohttp.ClientSession
) -> None:
    hub.cloud.fail_next(f"/api/hubs/{hub.hub_id}/backups/", 503, count=2)
    with capture_logs() as logs:
        answer = await service(hub, session).run_requested("owner@example.com")

    assert isinstance(answer, BackupCompleted), answer
    assert len(hub.cloud.backups(hub.hub_id)) == 1
    retries = [e for e in logs if e["event"] == "cloud request failed, retrying"]
    assert len(retries) == 2
    assert list_temp_leftovers(hub.settings.state_dir) == []


async def test_upload_gives_up_after_three_retries(
    hub: HubEnv, session: aiohttp.ClientSession
) -> None:
    hub.cloud.fail_next(f"/api/hubs/{hub.hub_id}/backups/", 500, count=10)
    with capture_logs() as logs:
        answer = await service(hub, session).run_requested("owner@example.com")

    assert isinstance(answer, BackupFailed)
    assert "could not upload the backup" in answer.error
    assert "HTTP 500" in answer.error and "4 attempts" in answer.error
    assert len([e for e in logs if e["event"] == "cloud request failed, retrying"]) == 3
    assert hub.cloud.backups(hub.hub_id) == []
    assert list_temp_leftovers(hub.settings.state_dir) == []


async def test_cloud_down_answers_backup_failed(
    hub: HubEnv, session: aiohttp.ClientSession, devcloud: DevCloud
) -> None:
    await devcloud.stop()
    answer = await service(hub, session).run_requested("owner@example.com")

    assert isinstance(answer, BackupFailed)
    assert "is unreachable" in answer.error
    assert list_temp_leftovers(hub.settings.state_dir) == []


async def test_a_second_request_during_a_backup_is_refused_at_once(
    hub: HubEnv, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(hub.settings.state_dir))
    monkeypatch.setenv("HUBLINK_BACKUP__DATABASE", str(hub.settings.backup.database))
    # The Cloud takes its time with the first upload (it still accepts it).
    hub.cloud.fail_next(f"/api/hubs/{hub.hub_id}/backups/", None, delay=scaled(1.5))
    runner = service(hub, session)
    first = asyncio.create_task(runner.run_requested("first@example.com"))
    try:
        await wait_until(lambda: runner.running, timeout=20, what="the first backup", poll=0.01)
        second = await asyncio.wait_for(runner.run_requested("second@example.com"), 2)
        # Another process (the CLI) is refused too: the lock is on state_dir.
        other = await asyncio.to_thread(run_hublink, "backup", "--output", str(tmp_path / "x"))
    finally:
        answer = await first

    assert isinstance(second, BackupFailed)
    assert second.error == "a backup is already running"
    assert second.requested_by == "second@example.com"
    assert isinstance(answer, BackupCompleted), answer
    assert other.returncode == 1 and "a backup is already running" in other.stderr
    assert not (tmp_path / "x").exists()
    assert len(hub.cloud.backups(hub.hub_id)) == 1
