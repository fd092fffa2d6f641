"""The hub's backup identity and the recipients of every backup (contract sections 4 and 7)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import SecretStr
from pyrage import x25519

from hublink.backup.keys import (
    ensure_identity,
    has_owner_recipient,
    identity_path,
    owner_recipients,
    parse_recipient,
)
from hublink.config import BackupSettings, Settings
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from hublink.enroll import enroll
from hublink.errors import BackupError, ConfigError
from hublink.retry import RetryPolicy
from support.backup import make_database
from support.cli import run_hublink


def test_identity_is_private_and_in_age_keygen_format(tmp_path: Path, age_bin: str) -> None:
    identity = ensure_identity(tmp_path / "state")
    path = identity_path(tmp_path / "state")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1] == f"# public key: {identity.to_public()}"
    assert lines[2].startswith("AGE-SECRET-KEY-1")
    # The standard tools read it: age-keygen derives the same public key, and
    # age decrypts what was encrypted to that key.
    keygen = shutil.which("age-keygen", path=str(Path(age_bin).parent))
    assert keygen is not None
    derived = subprocess.run([keygen, "-y", str(path)], capture_output=True, text=True, check=True)
    assert derived.stdout.strip() == str(identity.to_public())
    sealed = subprocess.run(
        [age_bin, "-r", str(identity.to_public())], input=b"hello", capture_output=True, check=True
    ).stdout
    opened = subprocess.run(
        [age_bin, "-d", "-i", str(path)], input=sealed, capture_output=True, check=True
    ).stdout
    assert opened == b"hello"


def test_identity_is_kept_across_calls(tmp_path: Path) -> None:
    first = ensure_identity(tmp_path)
    content = identity_path(tmp_path).read_bytes()
    second = ensure_identity(tmp_path)

    assert str(second.to_public()) == str(first.to_public())
    assert identity_path(tmp_path).read_bytes() == content


def test_a_damaged_identity_is_reported_and_never_replaced(tmp_path: Path) -> None:
    path = identity_path(tmp_path)
    path.write_text("# public key: age1...\nAGE-SECRET-KEY-1GARBAGE\n")
    with pytest.raises(BackupError, match="line 2 of the identity file is not an age secret key"):
        ensure_identity(tmp_path)
    assert path.read_text().endswith("GARBAGE\n")


def test_an_unreadable_identity_is_a_named_error_and_left_alone(tmp_path: Path) -> None:
    # Not a traceback from `hublink backup`, not "unexpected error" in backup_failed.
    db = tmp_path / "hub.sqlite3"
    make_database(db, rows=10)
    state_dir = tmp_path / "state"
    identity_path(state_dir).mkdir(parents=True)  # a folder where the key should be
    (tmp_path / "hublink.toml").write_text(
        f'state_dir = "{state_dir}"\n[backup]\ndatabase = "{db}"\n'
    )
    result = run_hublink("backup", "--output", str(tmp_path / "b.age"))

    assert result.returncode == 1, result.stderr
    assert f"cannot read the backup identity {identity_path(state_dir)}" in result.stderr
    assert "Traceback" not in result.stderr
    assert identity_path(state_dir).is_dir()
    assert not (tmp_path / "b.age").exists()


def _ssh_public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode() + " owner@laptop"


def test_every_configured_owner_key_is_a_recipient(tmp_path: Path) -> None:
    owner_age = str(x25519.Identity.generate().to_public())
    owner_ed = _ssh_public(ed25519.Ed25519PrivateKey.generate())
    owner_rsa = _ssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    settings = Settings(
        state_dir=tmp_path,
        backup=BackupSettings(recipients=(owner_age, owner_ed, owner_rsa)),
    )
    recipients = owner_recipients(settings)

    assert [str(r) for r in recipients][:1] == [owner_age]
    assert len(recipients) == 3
    assert has_owner_recipient(settings)
    assert not has_owner_recipient(Settings(state_dir=tmp_path))


@pytest.mark.parametrize(
    "entry",
    [
        "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",  # bad checksum
        "ssh-ed25519 AAAAnotbase64!!",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ",  # cut short
    ],
)
def test_an_invalid_recipient_is_a_config_error_naming_it(entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_recipient(entry)
    assert caught.value.exit_code == 78
    assert entry[:20] in caught.value.message


def test_hublink_backup_with_an_invalid_recipient_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "hub.sqlite3"
    make_database(db, rows=10)
    bad = "age1" + "q" * 58
    (tmp_path / "hublink.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\n[backup]\ndatabase = "{db}"\nrecipients = ["{bad}"]\n'
    )
    result = run_hublink("backup", "--output", str(tmp_path / "b.age"))

    assert result.returncode == 78, result.stderr
    assert f"backup.recipients entry '{bad}'" in result.stderr
    assert not (tmp_path / "b.age").exists()
    assert not (tmp_path / "state" / "backup-identity.txt").exists()


@pytest.mark.parametrize("owner_key", [False, True])
async def test_registration_makes_the_identity_and_reminds_about_an_owner_key(
    devcloud: DevCloud, tmp_path: Path, owner_key: bool
) -> None:
    recipients = (str(x25519.Identity.generate().to_public()),) if owner_key else ()
    settings = Settings(
        cloud_url=devcloud.url,
        state_dir=tmp_path / "state",
        backup=BackupSettings(recipients=recipients),
    )
    steps: list[str] = []
    await enroll(
        settings,
        email=DEMO_EMAIL,
        password=SecretStr(DEMO_PASSWORD),
        name="Corner Shop",
        address="",
        force=False,
        progress=steps.append,
        policy=RetryPolicy(attempts=2, deadline=5.0, backoff_base=0.01),
    )

    path = identity_path(settings.state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("# created: ")
    reminders = [s for s in steps if s.startswith("reminder: no recipient of your own")]
    assert len(reminders) == (0 if owner_key else 1)
