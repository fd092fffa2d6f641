"""Backups: hublink's pipeline vs the stock tools, side by side in one run; memory stays flat.

On generated WAL-mode SQLite databases (sales rows, text and a blob each;
cached in .cache/bench/), each round runs, taking turns:

* tools:   ``sqlite3 DB ".backup SNAP"`` then ``zstd -3 -c SNAP | age -r KEY > OUT``
* hublink: the same job by ``hublink.backup.pipeline.write_encrypted_backup``
           (one-step snapshot, zstd with the shipped workers, age, SHA-256 on
           the way) in a fresh interpreter that reports its peak RSS growth
           (VmHWM at the end minus VmRSS after its imports); once on the
           database under test, once on a small one: flat memory means the
           same growth for both
* upload:  ``hublink backup`` (the whole CLI process, at the default log level)
           to the reference Cloud on 127.0.0.1, beside the tools followed by
           ``sha256sum`` and ``curl -T -`` to the same endpoint

Knobs: ``BENCH_BACKUP_MB`` (default ``100``; a comma-separated list such as
``500,1000`` gives rows for each size), ``BENCH_BACKUP_SMALL_MB`` (default 10),
``BENCH_BACKUP_ROUNDS`` (default ``BENCH_ROUNDS``). Goals (issue 5): hublink
>= 0.8x the tools' throughput, peak RSS growth < 64 MB whatever the size.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

from bench_idle import daemon_env
from pyrage import x25519
from report import ROOT, Row, rounds

from hublink import logs
from hublink.credentials import Credentials
from hublink.devcloud import DevCloud

CACHE = ROOT / ".cache" / "bench"

#: The hublink side, run in a fresh interpreter so that its memory is its own.
CHILD = r"""
import json, sys, time
from pathlib import Path
from hublink.backup.pipeline import write_encrypted_backup
from pyrage import x25519

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

database, work, recipient = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
recipients = [x25519.Recipient.from_str(recipient)]
before = status("VmRSS")
started = time.perf_counter()
sealed = write_encrypted_backup(
    database, work_dir=work, dest_dir=work, recipients=recipients, level=3
)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "growth": status("VmHWM") - before, "size": sealed.size}))
sealed.path.unlink()
"""

#: The stock tools, then the same upload as hublink's (contract section 1) with curl.
#: The hub's token reaches curl in a header file, not on its command line.
TOOLS_UPLOAD = r"""
set -euo pipefail
sqlite3 "$DB" ".backup $WORK/snap.sqlite3"
zstd -3 -q -c "$WORK/snap.sqlite3" | age -r "$RECIPIENT" > "$WORK/out.age"
rm "$WORK/snap.sqlite3"
sum=$(sha256sum "$WORK/out.age" | cut -d' ' -f1)
curl -sS --fail -o /dev/null -X POST -T - -H @"$HEADERS" -H "Expect:" \
    -H "Content-Type: application/octet-stream" -H "X-Backup-Filename: tools.db.zst.age" \
    -H "X-Backup-Sha256: $sum" "$URL" < "$WORK/out.age"
rm "$WORK/out.age"
"""


def sizes() -> list[int]:
    """The database sizes under test, in MB (``BENCH_BACKUP_MB``)."""
    return [int(part) for part in os.environ.get("BENCH_BACKUP_MB", "100").split(",") if part]


def bench_database(size_mb: int) -> Path:
    """A WAL-mode database of at least ``size_mb`` MB: sales rows, text and a blob each."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"hub-{size_mb}MB.sqlite3"
    if path.exists() and path.stat().st_size >= size_mb * 1_000_000:
        return path
    print(f"generating {path} ...", flush=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE sale (id INTEGER PRIMARY KEY, at TEXT, customer TEXT, note TEXT, blob BLOB)"
    )
    conn.execute("CREATE INDEX sale_customer ON sale(customer)")
    batch = min(20_000, 200 * size_mb)  # about 450 bytes a row: small files stay small
    done = 0
    while path.stat().st_size < size_mb * 1_000_000:
        rows = (
            (
                f"-{i} seconds",
                f"customer-{i % 5000}@example.com",
                f"sold item {i % 997} qty {i % 13} price {(i * 7) % 1000}.99 " * 3,
            )
            for i in range(done, done + batch)
        )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO sale(at, customer, note, blob) "
            "VALUES (datetime('now', ?), ?, ?, randomblob(250))",
            rows,
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        done += batch
    conn.close()
    return path


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``argv``; wall seconds and its stdout. Raises on a non-zero exit."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"bench: {argv[0]} exited {proc.returncode}: {err.decode()[-2000:]}")
    return elapsed, out.decode()


async def tools_local(database: Path, work: Path, recipient: str) -> float:
    """Seconds of the stock tools' backup, written to ``work``."""
    snap, out = work / "snap.sqlite3", work / "out.age"
    script = (
        f'set -euo pipefail; sqlite3 "{database}" ".backup {snap}"; '
        f'zstd -3 -q -c "{snap}" | age -r {recipient} > "{out}"; rm "{snap}" "{out}"'
    )
    seconds, _ = await run("bash", "-c", script)
    return seconds


async def hublink_local(database: Path, work: Path, recipient: str) -> dict[str, float]:
    """``{seconds, growth, size}`` of hublink's pipeline in a fresh interpreter."""
    _, out = await run(sys.executable, "-c", CHILD, str(database), str(work), recipient)
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


class Uploads:
    """The two uploads to the reference Cloud, each to a hub of its own."""

    def __init__(self, cloud: DevCloud, work: Path, recipient: str) -> None:
        self.cloud = cloud
        self.work = work
        self.recipient = recipient
        self.hub: Credentials = cloud.enroll_into(work / "hub" / "state", name="Bench Hub")
        self.tools: Credentials = cloud.enroll_into(work / "tools" / "state", name="Tools")
        headers = work / "tools" / "headers"
        headers.touch(mode=0o600)
        headers.write_text(f"Authorization: Bearer {self.tools.tunnel_token.get_secret_value()}\n")
        self.headers = headers
        self._seen: dict[UUID, int] = {}  # backups stored so far, per hub

    async def hublink(self, database: Path) -> float:
        """Seconds of ``hublink backup`` (the CLI, upload included)."""
        state = self.work / "hub" / "state"
        env = daemon_env(self.cloud.url, state, HUBLINK_BACKUP__DATABASE=str(database))
        seconds, _ = await run(sys.executable, "-m", "hublink", "backup", env=env)
        self._discard(self.hub)
        return seconds

    async def stock(self, database: Path) -> float:
        """Seconds of the tools' backup, ``sha256sum`` and ``curl -T -`` to the same endpoint."""
        env = os.environ | {
            "DB": str(database),
            "WORK": str(self.work / "tools"),
            "RECIPIENT": self.recipient,
            "HEADERS": str(self.headers),
            "URL": f"{self.cloud.url}/api/hubs/{self.tools.hub_id}/backups/",
        }
        seconds, _ = await run("bash", "-c", TOOLS_UPLOAD, env=env)
        self._discard(self.tools)
        return seconds

    def _discard(self, creds: Credentials) -> None:
        """Check that the upload arrived, then free its disk space."""
        records = self.cloud.backup_records(creds.hub_id)
        new = records[self._seen.get(creds.hub_id, 0) :]
        if len(new) != 1:
            raise RuntimeError(f"bench: {len(new)} new backups stored, expected 1")
        self._seen[creds.hub_id] = len(records)
        new[0].path.unlink()


async def collect(size_mb: int, small_mb: int, count: int) -> dict[str, list[float]]:
    """``count`` interleaved rounds of every variant on the ``size_mb`` database."""
    logs.configure("error", "console")  # the Cloud's lines stay out of the bench's output
    database, small = bench_database(size_mb), bench_database(small_mb)
    db_mb, small_db_mb = database.stat().st_size / 1e6, small.stat().st_size / 1e6
    recipient = str(x25519.Identity.generate().to_public())
    got: dict[str, list[float]] = {
        key: []
        for key in ("tools", "hublink", "growth", "small_growth", "upload_tools", "upload_ours")
    }
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        cloud = DevCloud(work / "cloud")
        await cloud.start()
        try:
            uploads = Uploads(cloud, work, recipient)
            for _ in range(count):
                got["tools"].append(db_mb / await tools_local(database, work, recipient))
                ours = await hublink_local(database, work, recipient)
                got["hublink"].append(db_mb / ours["seconds"])
                got["growth"].append(ours["growth"] / 2**20)
                small_run = await hublink_local(small, work, recipient)
                got["small_growth"].append(small_run["growth"] / 2**20)
                got["upload_tools"].append(db_mb / await uploads.stock(database))
                got["upload_ours"].append(db_mb / await uploads.hublink(database))
        finally:
            await cloud.stop()
    got["small_mb"] = [small_db_mb]
    return got


def rows() -> list[Row]:
    """Per database size: throughput beside the tools, RSS growth beside a small database."""
    for tool in ("sqlite3", "zstd", "age", "curl", "sha256sum"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing; run `make tools`")
    small_mb = int(os.environ.get("BENCH_BACKUP_SMALL_MB", "10"))
    count = int(os.environ.get("BENCH_BACKUP_ROUNDS", str(rounds())))
    out: list[Row] = []
    for size_mb in sizes():
        got = asyncio.run(collect(size_mb, small_mb, count))
        db = f"{size_mb} MB database"
        small_note = (
            "Issue 12 measured backups at 500 MB and 1 GB: `BENCH_BACKUP_MB=500,1000` runs "
            "those sizes (minutes each). The default keeps `make bench` short; whatever a "
            "backup costs once (for the upload row also the CLI's start-up) weighs more on it."
            if size_mb < 500
            else ""
        )
        out += [
            Row(
                f"backup of a {db}: snapshot → zstd -3 → age",
                "MB/s",
                got["hublink"],
                got["tools"],
                "`sqlite3 .backup`; `zstd -3 | age`",
                ">= 0.8x",
                small_note,
            ),
            Row(
                f"backup of a {db}: peak RSS growth",
                "MiB",
                got["growth"],
                got["small_growth"],
                f"same on a {got['small_mb'][0]:.0f} MB database",
                "flat (≈ 1x), < 64 MB",
            ),
            Row(
                f"`hublink backup` of a {db}, upload to the Cloud",
                "MB/s",
                got["upload_ours"],
                got["upload_tools"],
                "the tools, `sha256sum`, `curl -T -`",
                ">= 0.8x",
                small_note,
            ),
        ]
    return out


if __name__ == "__main__":
    for row in rows():
        print(" | ".join(row.cells()))
