"""``hublink backup --output FILE`` as an operator meets it: an existing file is kept unless
``--force``, and a backup stopped halfway leaves no file behind (issue 10, item 20)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backup import list_temp_leftovers, make_database
from support.cli import HUBLINK_COMMAND, run_hublink
from support.polling import wait_until


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Hub database and a state dir, named in the environment; the folder holding both."""
    make_database(tmp_path / "hub.sqlite3", rows=200)
    (tmp_path / "state").mkdir(mode=0o700)
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HUBLINK_BACKUP__DATABASE", str(tmp_path / "hub.sqlite3"))
    yield tmp_path


def test_an_existing_output_is_kept_without_force(box: Path) -> None:
    output = box / "backup.age"
    output.write_bytes(b"last week's backup")
    refused = run_hublink("backup", "--output", str(output))
    assert refused.returncode == 1
    assert f"{output} exists already; hublink backup does not overwrite it" in refused.stderr
    assert "pass --force to replace it" in refused.stderr
    assert output.read_bytes() == b"last week's backup"
    assert list_temp_leftovers(box) == [] and list_temp_leftovers(box / "state") == []

    replaced = run_hublink("backup", "--output", str(output), "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert output.read_bytes().startswith(b"age-encryption.org/v1\n")


def test_a_folder_as_output_is_refused(box: Path) -> None:
    result = run_hublink("backup", "--output", str(box))
    assert result.returncode == 1
    assert f"{box} is a folder; --output names the backup file to write" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_relative_output_lands_in_the_current_folder(box: Path) -> None:
    result = run_hublink("backup", "--output", "hub.age", cwd=box)
    assert result.returncode == 0, result.stderr
    assert f"written to {box / 'hub.age'}" in result.stdout


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130), (signal.SIGHUP, 128 + 1)],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_a_backup_stopped_while_it_writes_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals, code: int
) -> None:
    # ~25 MB of random rows at zstd level 12: several seconds of writing to stop in.
    database = tmp_path / "hub.sqlite3"
    make_database(database, rows=50_000, blob=500)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "hub.db.zst.age"
    output.write_bytes(b"the previous backup")
    env = dict(os.environ) | {
        "HUBLINK_STATE_DIR": str(tmp_path / "state"),
        "HUBLINK_BACKUP__DATABASE": str(database),
        "HUBLINK_BACKUP__ZSTD_LEVEL": "12",
    }
    proc = subprocess.Popen(
        [*HUBLINK_COMMAND, "backup", "--output", str(output), "--force"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        asyncio.run(
            wait_until(
                lambda: any(
                    p.stat().st_size > 0 for p in out_dir.glob(".backup-*.tmp") if p.exists()
                ),
                timeout=60,
                what="the encrypted backup being written beside the output",
            )
        )
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["hub.db.zst.age"]
    assert output.read_bytes() == b"the previous backup"
    assert list_temp_leftovers(tmp_path / "state") == []
