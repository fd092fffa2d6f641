"""The state dir: every file name hublink keeps there (contract section 4) and its locks.

Locks are ``flock`` locks on files that sit beside the data they guard and are
never removed (removing one would let a second process lock a different
inode). The kernel releases them when the holder dies, so a crash never leaves
a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from hublink.errors import DaemonLockedError, HublinkError, LockHeldError
from hublink.fsutil import PRIVATE_FILE, ensure_private_dir

#: The hub's permanent credentials (0600).
CREDENTIALS = "credentials.toml"
#: frpc's generated configuration (0600: it holds the tunnel token).
FRPC_CONFIG = "frpc.toml"
#: Events waiting to be sent (0600).
OUTBOX = "outbox.sqlite3"
#: What the Cloud told us: plugin updates, revoked users, the last backup.
NOTICES = "state.sqlite3"
#: The hub's own age identity for backups (0600).
BACKUP_IDENTITY = "backup-identity.txt"
#: The local page's setup code (0600, contract section 9).
WEB_CODE = "web-code"
#: The scheduled backups' delay (drawn once) and the last slot done (0600, contract section 11).
BACKUP_SCHEDULE = "backup-schedule.json"

#: Held by a running daemon for its whole life; holds the daemon's pid.
DAEMON_LOCK = ".daemon.lock"
#: Held while the credentials are read-modified-written (register, unregister).
CREDENTIALS_LOCK = ".credentials.lock"
#: Held by the one backup that may run at a time, in any process.
BACKUP_LOCK = ".backup.lock"


def take_lock(path: Path, *, wait: bool) -> int:
    """Open ``path`` (created 0600) and hold an exclusive ``flock`` on it; the open fd.

    Raises:
        LockHeldError: ``wait`` is False and another process holds the lock.
        HublinkError: the lock file cannot be created (a folder owned by another user).
    """
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as err:
        raise HublinkError(
            f"cannot create {path}: {err.strerror or err}",
            hint="run hublink as the user that owns the state directory (usually hublink)",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise LockHeldError(f"{path} is held by another process") from None
    return fd


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold the lock of :func:`take_lock` for the block."""
    fd = take_lock(path, wait=wait)
    try:
        yield
    finally:
        os.close(fd)


def hold_daemon_lock(state_dir: Path) -> int:
    """Take the one-daemon lock for the caller's lifetime and write the pid into it; its fd.

    Raises:
        DaemonLockedError: another daemon runs on ``state_dir``.
        HublinkError: the state dir is not writable by this user.
    """
    try:
        fd = take_lock(state_dir / DAEMON_LOCK, wait=False)
    except LockHeldError:
        raise DaemonLockedError(
            f"another hublink daemon is running on {state_dir}",
            hint="stop it first (systemctl stop hublink); two daemons must not run at once",
        ) from None
    # The holder's pid, for `hublink status` when the daemon does not answer.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def daemon_lock_holder(state_dir: Path) -> int | None:
    """The pid of a daemon holding ``state_dir`` (0 if unreadable), or None when none does."""
    try:
        fd = os.open(state_dir / DAEMON_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
