"""The enrollment flow in-process, against the reference Cloud (a scripted one for clocks)."""

from __future__ import annotations

import asyncio
import os
import stat
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from hublink.cloud.client import LOGIN_PATH, PUBLIC_KEY_PATH, REFRESH_PATH, REGISTER_PATH
from hublink.config import Settings
from hublink.credentials import CredentialStore
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from hublink.enroll import enroll
from hublink.errors import (
    AlreadyRegisteredError,
    CloudAuthError,
    CloudResponseError,
    CloudUnreachableError,
    CredentialsError,
)
from hublink.retry import RetryPolicy
from support.scripted_cloud import Canned, ScriptedCloud, get_shared_signer, make_registration

QUICK = RetryPolicy(attempts=3, deadline=3.0, backoff_base=0.01, backoff_max=0.05)


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(cloud_url=url, state_dir=tmp_path / "state")


def written(state_dir: Path) -> set[str]:
    """What enrollment left in the state dir, apart from the lock file."""
    if not state_dir.exists():
        return set()
    return {p.name for p in state_dir.iterdir()} - {".credentials.lock"}


async def run_enroll(
    settings: Settings,
    *,
    password: str = DEMO_PASSWORD,
    force: bool = False,
    steps: list[str] | None = None,
    name: str = "Corner Shop",
) -> Any:
    return await enroll(
        settings,
        email=DEMO_EMAIL,
        password=SecretStr(password),
        name=name,
        address="Main Street 1",
        force=force,
        progress=(steps if steps is not None else []).append,
        policy=QUICK,
    )


async def test_enrollment_saves_private_credentials(devcloud: DevCloud, tmp_path: Path) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    steps: list[str] = []
    creds = await run_enroll(settings, steps=steps)

    assert [s.split(" ")[0] for s in steps] == [
        "logging",
        "verifying",
        "registering",
        "saved",
        "reminder:",  # no backup recipient of the owner's own is configured
    ]
    (hub,) = devcloud.hubs()
    assert hub.hub_id == str(creds.hub_id)
    assert (hub.name, hub.address) == ("Corner Shop", "Main Street 1")
    path = settings.credentials_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = tomllib.loads(path.read_text())
    assert saved["hub_id"] == hub.hub_id
    assert saved["slug"] == hub.slug
    assert saved["tunnel_port"] == hub.tunnel_port
    assert saved["tunnel_token"] == hub.tunnel_token
    assert saved["cloud_url"] == devcloud.url
    assert abs(saved["registered_at"].timestamp() - time.time()) < 60
    # Nothing else of enrollment's own (the backup identity may join it).
    assert "credentials.toml" in written(settings.state_dir)
    assert not [n for n in written(settings.state_dir) if n.endswith(".tmp")]


async def test_no_secret_reaches_a_log_event(devcloud: DevCloud, tmp_path: Path) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    with structlog.testing.capture_logs() as events:
        creds = await run_enroll(settings)
    assert any(e["event"] == "hub registered" for e in events)
    dumped = repr(events)
    assert DEMO_PASSWORD not in dumped
    assert creds.tunnel_token.get_secret_value() not in dumped
    assert "eyJ" not in dumped  # no JWT, whatever its value


async def test_already_registered_is_refused_before_the_cloud_is_contacted(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    first = await run_enroll(settings)
    before = settings.credentials_path.read_bytes()
    steps: list[str] = []
    with pytest.raises(AlreadyRegisteredError) as caught:
        await run_enroll(settings, steps=steps)
    assert str(first.hub_id) in str(caught.value)
    assert "--force" in str(caught.value)
    assert steps == []
    assert len(devcloud.hubs()) == 1
    assert settings.credentials_path.read_bytes() == before


async def test_force_replaces_the_credentials(devcloud: DevCloud, tmp_path: Path) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    first = await run_enroll(settings)
    steps: list[str] = []
    second = await run_enroll(settings, force=True, steps=steps)
    assert second.hub_id != first.hub_id
    assert steps[0].startswith(f"replacing the credentials of hub {first.slug}")
    assert CredentialStore(settings.state_dir).load().hub_id == second.hub_id
    assert len(devcloud.hubs()) == 2


async def test_corrupt_credentials_are_never_overwritten_without_force(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    settings.state_dir.mkdir(mode=0o700)
    settings.credentials_path.write_text("hub_id = \n")
    with pytest.raises(CredentialsError) as caught:
        await run_enroll(settings)
    assert str(settings.credentials_path) in str(caught.value)
    assert caught.value.exit_code == 78
    assert settings.credentials_path.read_text() == "hub_id = \n"
    assert devcloud.hubs() == []
    # With --force the broken file is replaced.
    creds = await run_enroll(settings, force=True)
    assert CredentialStore(settings.state_dir).load().hub_id == creds.hub_id


async def test_wrong_password_writes_nothing(devcloud: DevCloud, tmp_path: Path) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    with pytest.raises(CloudAuthError) as caught:
        await run_enroll(settings, password="not-the-password")
    assert caught.value.exit_code == 77
    assert "No active account" in str(caught.value)
    assert written(settings.state_dir) == set()
    assert devcloud.hubs() == []


async def test_register_401_then_refresh_then_success(devcloud: DevCloud, tmp_path: Path) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    devcloud.fail_next("/api/hubs/register/", 401, body='{"detail": "Token is expired"}')
    creds = await run_enroll(settings)
    assert [h.hub_id for h in devcloud.hubs()] == [str(creds.hub_id)]


async def test_invalid_answer_from_register_saves_nothing(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    bad = '{"hub_id": "42", "slug": "s", "tunnel_port": 99999, "tunnel_token": "t"}'
    devcloud.fail_next("/api/hubs/register/", 201, body=bad)
    with pytest.raises(CloudResponseError, match="hub_id"):
        await run_enroll(settings)
    assert written(settings.state_dir) == set()


async def test_unreachable_cloud_writes_nothing(tmp_path: Path) -> None:
    settings = settings_for("http://127.0.0.1:9", tmp_path)
    with pytest.raises(CloudUnreachableError):
        await run_enroll(settings)
    assert written(settings.state_dir) == set()


async def test_concurrent_enrollments_register_exactly_one_hub(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    """The second run waits for the lock, then sees the first one's credentials and refuses."""
    settings = settings_for(devcloud.url, tmp_path)
    # A slow first login keeps the lock held while the second run arrives.
    devcloud.fail_next("/api/auth/login/", None, delay=0.3)
    results = await asyncio.gather(
        run_enroll(settings, name="First"),
        run_enroll(settings, name="Second"),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, AlreadyRegisteredError)]
    enrolled = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 1 and len(enrolled) == 1
    (hub,) = devcloud.hubs()
    assert hub.hub_id == str(enrolled[0].hub_id)
    assert CredentialStore(settings.state_dir).load().hub_id == enrolled[0].hub_id


# --- a Cloud whose clock disagrees with ours ------------------------------------------


async def test_wrong_local_clock_is_reported_but_does_not_break_enrollment(
    scripted_cloud: ScriptedCloud, tmp_path: Path
) -> None:
    """The box's clock is 2 h fast: its tokens look expired locally, fine by the Cloud's clock."""
    signer = get_shared_signer()
    cloud_now = time.time() - 7200
    scripted_cloud.clock_offset = -7200
    scripted_cloud.on("POST", LOGIN_PATH, signer.login_answer(now=cloud_now))
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, signer.public_key_answer())
    scripted_cloud.on("POST", REGISTER_PATH, Canned(status=201, json=make_registration()))
    settings = settings_for(scripted_cloud.url, tmp_path)
    steps: list[str] = []
    creds = await run_enroll(settings, steps=steps)
    (warning,) = [s for s in steps if s.startswith("warning:")]
    assert "clock is 2 h ahead of the Cloud's" in warning
    assert "timedatectl set-ntp true" in warning
    # registered_at is the Cloud's time, not the wrong local one.
    assert abs(creds.registered_at.timestamp() - cloud_now) < 60
    assert creds.registered_at.tzinfo is not None
    assert datetime.now(UTC).timestamp() - creds.registered_at.timestamp() > 3600


async def test_token_not_signed_by_the_clouds_key_is_refused(
    scripted_cloud: ScriptedCloud, tmp_path: Path
) -> None:
    from support.scripted_cloud import Signer

    scripted_cloud.on("POST", LOGIN_PATH, get_shared_signer().login_answer())
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, Signer().public_key_answer())
    scripted_cloud.on("POST", REGISTER_PATH, Canned(status=201, json=make_registration()))
    settings = settings_for(scripted_cloud.url, tmp_path)
    with pytest.raises(CloudResponseError, match="does not match its public key"):
        await run_enroll(settings)
    assert scripted_cloud.requests_to(REGISTER_PATH) == []
    assert written(settings.state_dir) == set()


async def test_a_cloud_without_a_public_key_still_enrolls(
    scripted_cloud: ScriptedCloud, tmp_path: Path
) -> None:
    """Contract: the signature "may be checked"; stock SimpleJWT has no public-key endpoint."""
    scripted_cloud.on(
        "POST", LOGIN_PATH, Canned(json={"access": "opaque-a", "refresh": "opaque-r"})
    )
    scripted_cloud.on("POST", REGISTER_PATH, Canned(status=201, json=make_registration()))
    settings = settings_for(scripted_cloud.url, tmp_path)
    steps: list[str] = []
    creds = await run_enroll(settings, steps=steps)
    assert str(creds.hub_id) == make_registration()["hub_id"]
    assert len(scripted_cloud.requests_to(PUBLIC_KEY_PATH)) == 1  # answered 404, not retried
    assert any("publishes no public key" in step for step in steps)
    assert "credentials.toml" in written(settings.state_dir)


async def test_refused_refresh_starts_over_with_login(
    scripted_cloud: ScriptedCloud, tmp_path: Path
) -> None:
    """Contract: refresh 401 means log in again; the password is still in memory."""
    signer = get_shared_signer()
    expired = Canned(status=401, json={"detail": "Token is expired"})
    scripted_cloud.on("POST", LOGIN_PATH, signer.login_answer())
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, signer.public_key_answer())
    scripted_cloud.on("POST", REGISTER_PATH, expired, Canned(status=201, json=make_registration()))
    scripted_cloud.on(
        "POST", REFRESH_PATH, Canned(status=401, json={"detail": "Token is blacklisted"})
    )
    settings = settings_for(scripted_cloud.url, tmp_path)
    steps: list[str] = []
    creds = await run_enroll(settings, steps=steps)
    assert str(creds.hub_id) == make_registration()["hub_id"]
    assert f"logging in again as {DEMO_EMAIL}" in steps
    assert len(scripted_cloud.requests_to(LOGIN_PATH)) == 2
    assert len(scripted_cloud.requests_to(REGISTER_PATH)) == 2


def test_state_dir_is_private(tmp_path: Path) -> None:
    # A sanity check of the store the flow writes through.
    store = CredentialStore(tmp_path / "fresh")
    with store.locked():
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode) == 0o700


# --- the registration's fields, whichever door they came through ----------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hublink.credentials import Credentials  # noqa: E402
from hublink.enroll import FIELD_LIMITS, registration_problems  # noqa: E402
from hublink.errors import InvalidFields  # noqa: E402


@given(name=st.text(max_size=120), address=st.text(max_size=320), email=st.text(max_size=40))
def test_any_name_enrollment_accepts_can_be_saved_and_read_back(
    name: str, address: str, email: str
) -> None:
    problems = registration_problems(
        email=email, password=SecretStr("pw"), name=name.strip(), address=address.strip()
    )
    assert all(":" in problem for problem in problems)
    if "name: " in " ".join(problems):
        return
    creds = Credentials.model_validate(
        {
            "hub_id": "6f1c2b1e-0000-4000-8000-000000000001",
            "slug": "s",
            "tunnel_port": 7001,
            "tunnel_token": "t",
            "cloud_url": "http://127.0.0.1",
            "registered_at": datetime.now(UTC),
            "name": name.strip() or None,
        }
    )
    saved = tomllib.loads(creds.to_toml().decode())
    assert saved.get("name") == (name.strip() or None)


async def test_bad_fields_are_refused_before_the_cloud_is_asked(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    settings = settings_for(devcloud.url, tmp_path)
    for name in ("", "tab\there", "x" * (FIELD_LIMITS["name"] + 1), "half \udc80"):
        with pytest.raises(InvalidFields) as caught:
            await run_enroll(settings, name=name)
        assert [p.split(":")[0] for p in caught.value.problems] == ["name"]
        assert caught.value.exit_code == 2
    assert devcloud.hubs() == []
    assert written(settings.state_dir) == set()


async def test_registration_draws_this_hubs_backup_delay_once(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    from datetime import date

    from hublink.backup.schedule import ScheduleState
    from hublink.statedir import BACKUP_SCHEDULE

    settings = settings_for(devcloud.url, tmp_path)
    await run_enroll(settings)
    path = settings.state_dir / BACKUP_SCHEDULE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = ScheduleState.load(settings.state_dir)
    assert first is not None and 0 <= first.fraction < 1 and first.last_slot is None
    # A new registration draws again, but keeps the last slot done: no second backup today.
    ScheduleState(first.fraction, date(2026, 5, 4)).save(settings.state_dir)
    await run_enroll(settings, force=True)
    again = ScheduleState.load(settings.state_dir)
    assert again is not None and again.last_slot == date(2026, 5, 4)
    assert again.fraction != first.fraction


async def test_backup_preparation_that_fails_after_the_save_is_a_warning_not_an_undo(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    from hublink.statedir import BACKUP_IDENTITY, BACKUP_SCHEDULE

    settings = settings_for(devcloud.url, tmp_path)
    settings.state_dir.mkdir(mode=0o700)
    # An identity file that holds no key (never replaced: old backups may need it),
    # and a directory where the schedule's file goes (a write there is an OSError).
    (settings.state_dir / BACKUP_IDENTITY).write_text("not an age identity\n")
    (settings.state_dir / BACKUP_SCHEDULE).mkdir()
    (settings.state_dir / BACKUP_SCHEDULE / "keep").write_text("")
    steps: list[str] = []
    creds = await run_enroll(settings, steps=steps)

    warnings = [step for step in steps if step.startswith("warning:")]
    assert [w.split(":")[1].strip() for w in warnings] == [
        "cannot prepare the backup identity",
        "cannot save the backup schedule's delay",
    ]
    assert CredentialStore(settings.state_dir).load().hub_id == creds.hub_id
    assert [hub.hub_id for hub in devcloud.hubs()] == [str(creds.hub_id)]
