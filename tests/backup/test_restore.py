"""``hublink restore``: a good backup comes back checked; every bad one fails clearly and
leaves nothing behind (contract sections 5 and 7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyrage import x25519

from hublink.backup.keys import identity_file_text
from hublink.backup.service import BackupService
from hublink.config import BackupSettings, Settings
from support.backup import make_database, read_database_facts
from support.cli import run_hublink


@pytest.fixture
async def backup(tmp_path: Path) -> tuple[Path, Path]:
    """A real backup of a 1000-row database, and the hub identity that opens it."""
    db = tmp_path / "hub.sqlite3"
    make_database(db, rows=1000)
    settings = Settings(
        cloud_url="http://127.0.0.1:9",
        state_dir=tmp_path / "state",
        backup=BackupSettings(database=db),
    )
    output = tmp_path / "hub.db.zst.age"
    await BackupService(settings, None, None).back_up(output)
    return output, settings.state_dir / "backup-identity.txt"


def restore(backup: Path, identity: Path, output: Path, *extra: str) -> tuple[int, str]:
    result = run_hublink(
        "restore", str(backup), "--identity", str(identity), "--output", str(output), *extra
    )
    return result.returncode, result.stdout + result.stderr


def folder_listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_restore_writes_a_checked_database(backup: tuple[Path, Path], tmp_path: Path) -> None:
    output = tmp_path / "restored" / "hub.sqlite3"
    output.parent.mkdir()
    code, text = restore(*backup, output)

    assert code == 0, text
    assert "integrity_check: ok" in text
    assert read_database_facts(output)[:2] == ("ok", 1000)
    assert folder_listing(output.parent) == {"hub.sqlite3"}


def test_restore_refuses_to_overwrite_without_force(
    backup: tuple[Path, Path], tmp_path: Path
) -> None:
    output = tmp_path / "existing.sqlite3"
    output.write_bytes(b"precious")
    code, text = restore(*backup, output)

    assert code == 1
    assert "exists already" in text and "--force" in text
    assert output.read_bytes() == b"precious"

    stale_wal = tmp_path / "existing.sqlite3-wal"
    stale_wal.write_bytes(b"a WAL of the old database")
    code, text = restore(*backup, output, "--force")
    assert code == 0, text
    assert read_database_facts(output)[:2] == ("ok", 1000)
    assert not stale_wal.exists(), "a stale WAL would be replayed onto the restored database"


def _damaged(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", r"is damaged: it is truncated or was modified"),
        ("tampered", r"is damaged: it is truncated or was modified"),
        ("not age", r"is not an age-encrypted backup"),
        ("empty", r"is not an age-encrypted backup"),
        ("header cut", r"damaged age header"),
    ],
)
def test_damaged_backups_fail_clearly_and_leave_nothing(
    backup: tuple[Path, Path], tmp_path: Path, case: str, expected: str
) -> None:
    good, identity = backup
    data = good.read_bytes()
    variants = {
        "truncated": data[: len(data) - 1000],
        "tampered": data[:-5000] + bytes([data[-5000] ^ 0x01]) + data[-4999:],
        "not age": (tmp_path / "hub.sqlite3").read_bytes(),  # the plain database itself
        "empty": b"",
        "header cut": data[:60],
    }
    bad = _damaged(tmp_path / "bad.age", variants[case])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, text = restore(bad, identity, out_dir / "hub.sqlite3")

    assert code == 1, text
    assert re.search(expected, text), text
    assert folder_listing(out_dir) == set(), "a partial database was left behind"


def test_wrong_identity_fails_clearly(backup: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = backup
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(identity_file_text(x25519.Identity.generate()))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, text = restore(good, stranger, out_dir / "hub.sqlite3")

    assert code == 1
    assert f"no key in {stranger} can decrypt" in text
    assert folder_listing(out_dir) == set()


def test_identity_file_that_is_not_a_key_fails_without_echoing_it(
    backup: tuple[Path, Path], tmp_path: Path
) -> None:
    good, _ = backup
    garbage = tmp_path / "notes.txt"
    garbage.write_text("my password is hunter2\n")
    code, text = restore(good, garbage, tmp_path / "hub2.sqlite3")

    assert code == 1
    assert "line 1 of the identity file is not an age secret key" in text
    assert "hunter2" not in text
    assert not (tmp_path / "hub2.sqlite3").exists()
