"""Helpers of the backup and restore tests: real SQLite files, a real writer process, the CLIs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A Hub application stand-in: commits one row per transaction, as fast as it
#: can, and keeps ``counter.n`` equal to the number of rows, so a snapshot that
#: mixes two moments shows up as a mismatch.
WRITER_SCRIPT = r"""
import sqlite3, sys, time
db, mode = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
conn.execute(f"PRAGMA journal_mode={mode}")
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO item(payload) VALUES (randomblob(200))")
    conn.execute("UPDATE counter SET n = n + 1")
    conn.execute("COMMIT")
"""


def make_database(
    path: Path, *, journal_mode: str = "wal", rows: int = 2000, blob: int = 500
) -> None:
    """A SQLite file with ``rows`` items (random blobs, so compression cannot hide a bug)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        conn.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO item(payload) VALUES (randomblob(?))", ((blob,) for _ in range(rows))
        )
        conn.execute("INSERT INTO counter VALUES (?)", (rows,))
        conn.execute("COMMIT")
    finally:
        conn.close()


def committed_rows(path: Path) -> int:
    """The number of rows committed right now, read the way any other reader would."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM item").fetchone()[0])
    finally:
        conn.close()


def database_facts(path: Path) -> tuple[str, int, int, int]:
    """``(integrity_check, rows, max id, counter)`` of a restored database."""
    conn = sqlite3.connect(path)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM item").fetchone()
        counter = conn.execute("SELECT n FROM counter").fetchone()[0]
        return str(check), int(rows), int(top), int(counter)
    finally:
        conn.close()


@contextlib.contextmanager
def writer_process(path: Path, journal_mode: str) -> Iterator[subprocess.Popen[bytes]]:
    """Another process inserting rows into ``path`` until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path), journal_mode])
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: Callable[[], bool], *, timeout: float = 20.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def run_hublink(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``hublink`` CLI in a child process with the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "hublink", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )


def age_zstd_restore(age_bin: str, identity: Path, backup: Path, output: Path) -> None:
    """The contract's recipe with the standard tools: ``age -d -i KEY FILE | zstd -d > DB``."""
    with output.open("wb") as out:
        age = subprocess.Popen(
            [age_bin, "-d", "-i", str(identity), str(backup)], stdout=subprocess.PIPE
        )
        assert age.stdout is not None
        zstd = subprocess.run(["zstd", "-d", "-q", "-c"], stdin=age.stdout, stdout=out, check=False)
        age.stdout.close()
        assert age.wait(timeout=60) == 0, "age -d failed"
        assert zstd.returncode == 0, "zstd -d failed"


def temp_leftovers(folder: Path) -> list[str]:
    """Backup temporaries (snapshots, ciphertexts) left in ``folder``."""
    return sorted(
        p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".snapshot")
    )
