"""Durable file writes: a crash or a full disk never leaves a truncated file."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
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


def atomic_write(
    path: Path, data: bytes, *, mode: int = PRIVATE_FILE, overwrite: bool = True
) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename, fsync folder.

    The temporary file is created with ``mode`` already set, so the content is
    never readable by others, not even for an instant.

    Raises:
        FileExistsError: ``overwrite`` is False and ``path`` exists (checked atomically
            where the filesystem has hard links; a FAT stick gets a check, then the rename).
    """
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
        if overwrite:
            tmp.replace(path)
        else:
            _place_new(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(folder)


def _place_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists; a link fails rather than replace."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (vfat, some FUSE mounts): the best left is check, then rename.
        if path.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        tmp.replace(path)
        return
    tmp.unlink()


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
