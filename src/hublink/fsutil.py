"""Durable file writes: a crash or a full disk never leaves a truncated file."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
#: Missing parents of hublink's folders: readable, writable by the owner only.
PARENT_DIR = 0o755


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` as 0700 (missing parents as 0755) if it does not exist yet."""
    make_dirs(path, PRIVATE_DIR)


def make_dirs(path: Path, mode: int) -> None:
    """``mkdir -p``: ``path`` with ``mode``, missing parents with :data:`PARENT_DIR`.

    ``Path.mkdir(parents=True)`` makes parents 0777 minus the umask, so under
    umask 000 anyone could rename hublink's folder away and put their own in
    its place; an explicit mode never grants group or others write access.
    """
    try:
        path.mkdir(mode=mode, exist_ok=True)
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_dirs(path.parent, PARENT_DIR)
        path.mkdir(mode=mode, exist_ok=True)


def create_private_file(path: Path) -> None:
    """Make sure ``path`` exists with mode 0600 (its folder 0700), before another library opens it.

    SQLite creates its database (and gives its -wal/-shm files the same mode)
    with the process umask; creating the file first keeps it private from its
    first instant.
    """
    ensure_private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))


def atomic_write(path: Path, data: bytes, *, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename, fsync folder.

    The temporary file is created with ``mode`` already set, so the content is
    never readable by others, not even for an instant.
    """
    tmp = _durable_temp(path, data, mode)
    try:
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def create_once(path: Path, data: bytes, *, mode: int = PRIVATE_FILE) -> bool:
    """Create ``path`` holding ``data`` unless it exists; whether this call created it.

    The file appears whole or not at all (written and fsynced under a temporary
    name, then hard-linked into place), and of two processes racing, exactly
    one creates it: the other finds the winner's file.
    """
    tmp = _durable_temp(path, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _durable_temp(path: Path, data: bytes, mode: int) -> Path:
    """``data`` fsynced in a new file beside ``path``, made with ``mode`` from its first byte."""
    # tempfile (with shutil and random) is a tenth of `hublink status`, which writes nothing.
    import tempfile

    folder = path.parent
    ensure_private_dir(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def loose_permissions(path: Path) -> bool:
    """Whether ``path`` is readable or writable by group or others."""
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
