"""The backup pipeline on this machine: snapshot → zstd → age, into one encrypted file.

Contract section 7. Everything here is blocking and runs in a worker thread
(:mod:`hublink.backup.service` moves it off the event loop). Memory stays
flat whatever the database size: the snapshot (:mod:`hublink.backup.snapshot`)
is a file, and compression and encryption stream it chunk by chunk into the
output file, whose SHA-256 and size are computed on the way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pyrage
import structlog
import zstandard

from hublink.backup.keys import Recipient
from hublink.backup.snapshot import (
    DEFAULT_LOCK_TIMEOUT,
    Abort,
    database_bytes,
    take_snapshot,
)
from hublink.errors import BackupError, LockHeldError
from hublink.fsutil import fsync_dir
from hublink.link.messages import BACKUP_ALREADY_RUNNING
from hublink.statedir import BACKUP_LOCK, exclusive_lock

log = structlog.get_logger(__name__)

#: Room left free beyond the backup's worst case, so that the Hub application
#: never finds its disk full because of a backup: a quarter of the data, at
#: least MIN_DISK_RESERVE, at most DISK_RESERVE. Sized from the data: a fixed
#: 16 MiB made a 100 KB backup ask for 17 MB, which a small state disk never has.
DISK_RESERVE = 16 * 1024 * 1024
MIN_DISK_RESERVE = 256 * 1024
#: zstd's worst case on incompressible data (its ZSTD_COMPRESSBOUND: + 1/256
#: and a block header per 128 KiB) and age's (16 bytes per 64 KiB chunk plus a
#: header of ~200 bytes per recipient), rounded up generously.
SEAL_OVERHEAD_RATIO = 1 / 128
SEAL_OVERHEAD_FIXED = 64 * 1024
#: Chunk size of every streamed read.
CHUNK_SIZE = 1024 * 1024
#: zstd compresses in worker threads while the calling thread encrypts,
#: hashes and writes (compression is most of the work: ~4x age's cost).
#: 2 MiB jobs keep zstd's buffers near 20 MiB whatever the database size (at
#: the default level 3; levels above ~15 need far more, for zstd's window).
ZSTD_THREADS = 2
ZSTD_JOB_SIZE = 2 * 1024 * 1024

TEMP_PREFIX = ".backup-"
TEMP_SUFFIX = ".tmp"
_SIDECARS = ("-journal", "-wal", "-shm")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class SealedBackup:
    """An encrypted backup on disk: its file, size in bytes and SHA-256 (hex)."""

    path: Path
    size: int
    sha256: str


def backup_filename(slug: str, now: datetime | None = None) -> str:
    """``hub-{slug}-{UTC timestamp}.db.zst.age``, e.g. ``hub-shop-20260101T120000Z.db.zst.age``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    # The slug is the Cloud's; it goes into an HTTP header and a file name, so
    # anything but plain characters (a slash, a line break) is neutralised.
    safe = _UNSAFE_IN_NAME.sub("-", slug) or "hub"
    return f"hub-{safe}-{moment:%Y%m%dT%H%M%SZ}.db.zst.age"


# --- one backup at a time ------------------------------------------------------


@contextlib.contextmanager
def backup_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``{state_dir}/.backup.lock`` for the block, across processes.

    Raises:
        BackupError: another backup (the daemon's or ``hublink backup``) runs.
    """
    try:
        with exclusive_lock(state_dir / BACKUP_LOCK, wait=False):
            yield
    except LockHeldError:
        raise BackupError(BACKUP_ALREADY_RUNNING) from None


def remove_stale_temp_files(folder: Path) -> None:
    """Remove what an interrupted backup left in ``folder`` (only ever called under the lock)."""
    for stale in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}*"):
        log.info("removing a stale backup file", path=str(stale))
        stale.unlink(missing_ok=True)


# --- checks before starting ----------------------------------------------------


def sealed_bound(size: int) -> int:
    """The most bytes the encrypted form of ``size`` bytes of data can take."""
    return size + int(size * SEAL_OVERHEAD_RATIO) + SEAL_OVERHEAD_FIXED


def disk_reserve(size: int) -> int:
    """Bytes left free beyond a backup of ``size`` bytes (see :data:`DISK_RESERVE`)."""
    return min(DISK_RESERVE, max(MIN_DISK_RESERVE, size // 4))


def check_room(needs: list[tuple[Path, int]]) -> None:
    """Fail early when a folder's file system lacks room for what will be written there.

    ``needs`` pairs folders with bytes; folders on the same file system add
    up, and :func:`disk_reserve` of their total stays free on each.

    Raises:
        BackupError: "not enough room in FOLDER: need X, have Y".
    """
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, size in needs:
        device = folder.stat().st_dev
        first, total = by_device.get(device, (folder, 0))
        by_device[device] = (first, total + size)
    for folder, total in by_device.values():
        need = total + disk_reserve(total)
        have = shutil.disk_usage(folder).free
        if have < need:
            raise BackupError(
                f"not enough room in {folder}: need {human_size(need)}, have {human_size(have)}",
                hint="free some space there; a backup needs room for a copy of the "
                "database and its encrypted form",
            )


def human_size(size: float) -> str:
    """``1.5 MB``-style sizes (powers of 1000, as df -H shows them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


# --- the snapshot --------------------------------------------------------------


# --- compression and encryption ------------------------------------------------


class _Sink:
    """Where pyrage writes the ciphertext: hashed and counted on the way to the file.

    pyrage reduces any exception raised inside ``write`` to a message string;
    the original is kept here so the caller can report it properly.
    """

    def __init__(self, out: BinaryIO, abort: Abort) -> None:
        self._out = out
        self._abort = abort
        self._digest = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            self._abort.check()
            self._out.write(data)
        except BaseException as err:
            self.error = err
            raise
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _Source:
    """Where pyrage reads the compressed snapshot; keeps any read error for the caller."""

    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except BaseException as err:
            self.error = err
            raise


def seal(
    snapshot: Path, out: BinaryIO, recipients: list[Recipient], *, level: int, abort: Abort
) -> tuple[int, str]:
    """Stream ``snapshot`` through zstd and age into ``out``; the ciphertext's size and SHA-256.

    Raises:
        BackupError: the disk filled up or a read or write failed.
    """
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=ZSTD_THREADS, job_size=ZSTD_JOB_SIZE
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    sink = _Sink(out, abort)
    with (
        snapshot.open("rb") as raw,
        compressor.stream_reader(
            raw, size=snapshot.stat().st_size, read_size=CHUNK_SIZE
        ) as compressed,
    ):
        # pyrage reads 8 KiB at a time; a buffer in between saves the zstd
        # reader from thousands of tiny calls per second.
        source = _Source(io.BufferedReader(compressed, CHUNK_SIZE))
        try:
            pyrage.encrypt_io(source, sink, recipients)
        except pyrage.EncryptError as err:
            raise _seal_error(sink.error or source.error, err) from None
    return sink.size, sink.hexdigest()


def _seal_error(cause: BaseException | None, err: Exception) -> BackupError:
    if isinstance(cause, BackupError):
        return cause
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        return BackupError(
            "the disk filled up while writing the encrypted backup",
            hint="free some space; a backup needs room for a copy of the database "
            "and its encrypted form",
        )
    if isinstance(cause, OSError):
        return BackupError(f"cannot write the encrypted backup: {cause.strerror or cause}")
    return BackupError(f"compressing or encrypting the backup failed: {cause or err}")


# --- the whole local pipeline ---------------------------------------------------


def write_encrypted_backup(
    database: Path,
    *,
    work_dir: Path,
    dest_dir: Path,
    recipients: list[Recipient],
    level: int,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    abort: Abort | None = None,
) -> SealedBackup:
    """Snapshot, compress and encrypt ``database`` into a new private temp file in ``dest_dir``.

    The snapshot lives in ``work_dir`` (the state_dir) and is removed before
    returning, whatever happens. The caller owns the returned file: it uploads
    and removes it, or renames it into place.

    Raises:
        BackupError: any failure, with a message fit for ``backup_failed``.
    """
    abort = abort or Abort()
    try:
        size = database_bytes(database)
        # Worst case: the snapshot is as big as the database, and incompressible
        # data leaves zstd and age a little bigger than it went in.
        check_room([(work_dir, size), (dest_dir, sealed_bound(size))])
        with _temp_file(work_dir, ".snapshot") as snapshot:
            take_snapshot(database, snapshot, lock_timeout=lock_timeout, abort=abort)
            abort.check()
            with _temp_file(dest_dir, ".age", keep=True) as sealed, sealed.open("r+b") as out:
                sealed_size, sha256 = seal(snapshot, out, recipients, level=level, abort=abort)
    except OSError as err:
        # Files of state_dir or the destination folder that cannot be created,
        # or a database that vanished between the checks and the snapshot.
        raise BackupError(f"the backup failed: {err.strerror or err}: {err.filename}") from None
    log.info("backup sealed", size=sealed_size, database_bytes=size)
    return SealedBackup(path=sealed, size=sealed_size, sha256=sha256)


@contextlib.contextmanager
def _temp_file(folder: Path, kind: str, *, keep: bool = False) -> Iterator[Path]:
    # mkstemp creates the file 0600 from the start: the plain-text snapshot is
    # never readable by others, not even for an instant.
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=kind + TEMP_SUFFIX, dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    except BaseException:
        discard(path)
        raise
    if not keep:
        discard(path)


def discard(path: Path) -> None:
    """Remove a temporary file and any SQLite side file next to it."""
    for name in (path.name, *(path.name + s for s in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).unlink()


def check_output(output: Path, *, replace: bool) -> None:
    """Refuse an ``--output`` that is a folder, or an existing file unless ``replace``.

    Raises:
        BackupError: with a hint naming ``--force`` or another file name.
    """
    if output.is_dir():
        raise BackupError(
            f"{output} is a folder; --output names the backup file to write",
            hint=f"e.g. --output {output / 'hub.db.zst.age'}",
        )
    if output.exists() and not replace:
        raise BackupError(
            f"{output} exists already; hublink backup does not overwrite it",
            hint="pass --force to replace it, or choose another --output",
        )


def install(sealed: SealedBackup, output: Path, *, replace: bool = False) -> None:
    """Move a sealed backup (a temp file in ``output``'s folder) to ``output``, durably.

    Without ``replace`` an ``output`` that appeared meanwhile is kept: the
    backup goes in with a hard link, which fails rather than overwrite.

    Raises:
        BackupError: ``output`` exists and ``replace`` is false.
    """
    with sealed.path.open("rb") as handle:
        os.fsync(handle.fileno())
    if replace:
        sealed.path.replace(output)
    else:
        try:
            os.link(sealed.path, output)
        except FileExistsError:
            raise BackupError(
                f"{output} appeared while the backup ran; it was left as it was",
                hint="pass --force to replace it, or choose another --output",
            ) from None
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # A file system without hard links (vfat on a USB stick): checked just now.
            check_output(output, replace=False)
            sealed.path.replace(output)
        else:
            sealed.path.unlink()
    fsync_dir(output.parent)
