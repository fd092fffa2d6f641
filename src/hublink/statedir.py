"""The state dir: every file name hublink keeps there (contract section 4) and its locks.

Locks are ``flock`` locks on files that sit beside the data they guard and are
never removed (removing one would let a second process lock a different
inode). The kernel releases them when the holder dies, so a crash never leaves
a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

from hublink.errors import DaemonLockedError, HublinkError, LockHeldError, StateDirAccessError
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
#: Held while an unreadable SQLite file (outbox, notices) is moved aside and replaced.
REPAIR_LOCK = ".repair.lock"

#: The user the packaged unit runs as; named in hints when the real owner is unknown.
SERVICE_USER = "hublink"


def is_access_denied(err: OSError) -> bool:
    """Whether ``err`` means "not yours" (EACCES, EPERM) rather than a missing or broken file."""
    return err.errno in (errno.EACCES, errno.EPERM)


def access_denied(path: Path, state_dir: Path, *, command: str = "…") -> StateDirAccessError:
    """The error for ``path`` (in ``state_dir``, or the folder itself) that this user may not use.

    The message names the file, the folder's owner and this user; the hint
    says how to run ``hublink COMMAND`` as the owner (the README's
    ``sudo -u hublink``), or how to fix the mode when the folder is this user's.
    """
    me = _user_name(os.geteuid())
    try:
        owner_uid: int | None = state_dir.stat().st_uid
    except OSError:
        owner_uid = None
    if owner_uid is None:
        return StateDirAccessError(
            f"cannot create the state directory {state_dir} as user {me}: permission denied",
            path=path,
            state_dir=state_dir,
            hint=f"run it as the service's user: sudo -u {SERVICE_USER} hublink {command}, "
            "or set state_dir to a folder this user may write",
        )
    if owner_uid == os.geteuid():
        return StateDirAccessError(
            f"cannot use {path}: permission denied, although {state_dir} belongs to {me}",
            path=path,
            state_dir=state_dir,
            hint=f"give it back its modes: chmod 700 {state_dir}; chmod 600 {state_dir}/*",
        )
    owner = _user_name(owner_uid)
    return StateDirAccessError(
        f"cannot use {path}: permission denied "
        f"(the state directory {state_dir} belongs to {owner}; this is {me})",
        path=path,
        state_dir=state_dir,
        hint=f"run it as {owner}: sudo -u {owner} hublink {command}",
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def take_lock(path: Path, *, wait: bool) -> int:
    """Open ``path`` (created 0600) and hold an exclusive ``flock`` on it; the open fd.

    Raises:
        LockHeldError: ``wait`` is False and another process holds the lock.
        StateDirAccessError: the folder belongs to another user (exit 78).
        HublinkError: the lock file cannot be created for another reason (a full disk).
    """
    try:
        ensure_private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as err:
        if is_access_denied(err):
            raise access_denied(path, path.parent) from None
        raise HublinkError(
            f"cannot create {path}: {err.strerror or err}",
            hint="check the state directory: it must be a writable folder with free space",
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


def held_by_anyone(path: Path) -> bool:
    """Whether some open file holds the ``flock`` of ``path`` (False when there is no file)."""
    fd = _open_if_held(path)
    if fd is None:
        return False
    os.close(fd)
    return True


def daemon_lock_holder(state_dir: Path) -> int | None:
    """The pid of a daemon holding ``state_dir`` (0 if unreadable), or None when none does."""
    fd = _open_if_held(state_dir / DAEMON_LOCK)
    if fd is None:
        return None
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else 0


def _open_if_held(path: Path) -> int | None:
    """``path`` opened for reading when some open file holds its ``flock`` (the caller
    closes it); None when none does or there is no such file.

    A probe: a shared lock tried without waiting, and given back at once.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # also gives back the shared lock
    return None
