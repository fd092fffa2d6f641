"""Backup and restore helpers: real SQLite files, a real writer process, the standard tools."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


def count_committed_rows(path: Path) -> int:
    """The number of rows committed right now, read the way any other reader would."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM item").fetchone()[0])
    finally:
        conn.close()


def read_database_facts(path: Path) -> tuple[str, int, int, int]:
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


def restore_with_age_and_zstd(age_bin: str, identity: Path, backup: Path, output: Path) -> None:
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


def list_temp_leftovers(folder: Path) -> list[str]:
    """Backup temporaries (snapshots, ciphertexts) left in ``folder``."""
    return sorted(
        p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".snapshot")
    )
