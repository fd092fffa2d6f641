"""``hublink restore``: decrypt and decompress a backup into a checked SQLite file.

The same job as ``age -d -i KEY BACKUP | zstd -d > DB``, plus what a careful
operator would do by hand: the result is written to a temporary file next to
the destination, checked with ``PRAGMA integrity_check``, and only then
renamed into place. Whatever goes wrong (a wrong key, a truncated or tampered
file, something that is not a backup at all), no partial database is left.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage
import structlog
import zstandard

from hublink.backup.keys import Identity, load_identities
from hublink.backup.pipeline import CHUNK_SIZE, discard
from hublink.errors import BackupError
from hublink.fsutil import fsync_dir

log = structlog.get_logger(__name__)

#: The first line of every binary age file.
AGE_MAGIC = b"age-encryption.org/v1\n"
_SIDECARS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class RestoredDatabase:
    """A restored database: where it is and how big."""

    path: Path
    size: int


def restore_backup(
    backup: Path, identity_file: Path, output: Path, *, force: bool = False
) -> RestoredDatabase:
    """Decrypt ``backup`` with the keys in ``identity_file`` into the SQLite file ``output``.

    Raises:
        BackupError: ``output`` exists and ``force`` is false; the backup is
            unreadable, not an age file, damaged, or for other keys; or the
            result is not a sound SQLite database. Nothing is left at ``output``
            (an existing file stays as it was).
    """
    _refuse_overwrite(output, force=force)
    identities = load_identities(identity_file)
    _check_age_header(backup)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".restore.tmp", dir=output.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            _decrypt_into(backup, out, identities, identity_file)
            out.flush()
            os.fsync(out.fileno())
        check_integrity(temp)
        _replace(temp, output)
    except BaseException:
        discard(temp)
        raise
    size = output.stat().st_size
    log.info("backup restored", output=str(output), size=size)
    return RestoredDatabase(path=output, size=size)


def _refuse_overwrite(output: Path, *, force: bool) -> None:
    if not output.parent.is_dir():
        raise BackupError(f"the folder {output.parent} does not exist")
    if force or not output.exists():
        return
    raise BackupError(
        f"{output} exists already; hublink restore does not overwrite it",
        hint="pass --force to replace it, or choose another --output",
    )


def _check_age_header(backup: Path) -> None:
    try:
        with backup.open("rb") as handle:
            head = handle.read(len(AGE_MAGIC))
    except OSError as err:
        raise BackupError(f"cannot read the backup {backup}: {err.strerror}") from None
    if head != AGE_MAGIC:
        raise BackupError(
            f"{backup} is not an age-encrypted backup",
            hint="pass a file that `hublink backup` or the Cloud produced (*.db.zst.age)",
        )


class _Inflater:
    """Where pyrage writes the plaintext: zstd-decompressed straight into the output file.

    ``stream_writer`` emits at most ``CHUNK_SIZE`` at a time, so memory stays
    flat even for a frame that expands a thousandfold (free pages compress
    to nothing). pyrage reduces a write error to a string; it is kept here.
    """

    def __init__(self, out: BinaryIO) -> None:
        decompressor = zstandard.ZstdDecompressor()
        self._out = out
        self._writer = decompressor.stream_writer(out, write_size=CHUNK_SIZE, closefd=False)
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            self._writer.write(data)
        except BaseException as err:
            self.error = err
            raise
        # pyrage wants to hear that all of its bytes were taken.
        return len(data)

    def flush(self) -> None:
        # The zstd writer hands every decompressed byte to ``out`` at once.
        self._out.flush()


def _decrypt_into(
    backup: Path, out: BinaryIO, identities: list[Identity], identity_file: Path
) -> None:
    inflater = _Inflater(out)
    with backup.open("rb") as source:
        try:
            pyrage.decrypt_io(source, inflater, identities)
        except (pyrage.DecryptError, OSError) as err:
            raise _decrypt_error(err, inflater.error, backup, identity_file) from None
    inflater.flush()


def _decrypt_error(
    err: Exception, cause: BaseException | None, backup: Path, identity_file: Path
) -> BackupError:
    if isinstance(cause, zstandard.ZstdError):
        return BackupError(
            f"{backup} decrypts, but its content is not a zstd-compressed database ({cause})",
            hint="was it made by hublink? it may need only `age -d`",
        )
    if isinstance(cause, OSError):
        return BackupError(f"cannot write the restored database: {cause.strerror or cause}")
    text = str(err)
    if "No matching keys" in text:
        return BackupError(
            f"no key in {identity_file} can decrypt {backup}",
            hint="use the hub's backup-identity.txt or the private key of a "
            "backup.recipients entry that was configured when the backup was made",
        )
    if isinstance(err, pyrage.DecryptError):
        return BackupError(
            f"{backup} has a damaged age header ({text}); it is truncated or was modified"
        )
    return BackupError(
        f"{backup} is damaged: it is truncated or was modified, so its content "
        "fails authentication",
        hint="fetch the backup again; a damaged copy cannot be restored",
    )


def check_integrity(database: Path) -> None:
    """Run ``PRAGMA integrity_check`` on ``database``.

    Raises:
        BackupError: the file is not SQLite, or the check reports problems.
    """
    try:
        connection = sqlite3.connect(database, isolation_level=None)
        try:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as err:
        raise BackupError(f"the restored file is not a usable SQLite database ({err})") from None
    finally:
        # Opening a WAL-mode database leaves -wal/-shm files beside the temp file.
        for suffix in _SIDECARS:
            with contextlib.suppress(FileNotFoundError):
                database.with_name(database.name + suffix).unlink()
    problems = [str(row[0]) for row in rows]
    if problems != ["ok"]:
        shown = "; ".join(problems[:5])
        raise BackupError(f"the restored database fails PRAGMA integrity_check: {shown}")


def _replace(temp: Path, output: Path) -> None:
    # Side files of the database being replaced would be applied to the new
    # one on its next open (a stale WAL corrupts it), so they go first.
    for suffix in _SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            output.with_name(output.name + suffix).unlink()
    temp.replace(output)
    fsync_dir(output.parent)
