"""The checks of this machine: settings, credentials, folders, free space, the Hub's database."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from hublink.config import Settings
from hublink.credentials import Credentials, CredentialStore
from hublink.doctor.check import Check, os_reason, user_name
from hublink.errors import CredentialsError, NotRegisteredError, StateDirAccessError

#: Free space in state_dir below which the outbox and backups are at risk.
WARN_FREE_BYTES = 256 * 1024 * 1024
FAIL_FREE_BYTES = 16 * 1024 * 1024

SQLITE_MAGIC = b"SQLite format 3\x00"


def config_check(settings: Settings, path: Path | None) -> Check:
    """``config``: where the settings came from (a failure to load is reported by the CLI)."""
    where = f"{path}" if path is not None and path.exists() else "defaults and environment"
    return Check("config", "pass", f"loaded from {where}; cloud_url = {settings.cloud_url}")


def credentials_check(settings: Settings) -> tuple[Credentials | None, Check]:
    """``credentials``: present, parseable, mode 0600, owned by the running user."""
    store = CredentialStore(settings.state_dir)
    path = store.path
    try:
        info = path.stat()
    except FileNotFoundError:
        return None, Check(
            "credentials",
            "fail",
            f"{path} does not exist: this hub is not registered",
            "run `hublink register` (as the hublink user) to enroll it",
        )
    except PermissionError:
        return None, Check(
            "credentials",
            "fail",
            f"cannot reach {path}: permission denied",
            "run doctor as the hublink user: sudo -u hublink hublink doctor",
        )
    problems: list[str] = []
    hints: list[str] = []
    mode = info.st_mode & 0o777
    if mode != 0o600:
        problems.append(f"mode is {mode:04o}, not 0600 (the token is a password)")
        hints.append(f"chmod 600 {path}")
    if info.st_uid != os.geteuid():
        owner, me = user_name(info.st_uid), user_name(os.geteuid())
        problems.append(f"owned by {owner}, but doctor runs as {me}")
        hints.append(
            f"run as the owner (sudo -u {user_name(info.st_uid)} hublink doctor), "
            f"or chown hublink: {path}"
        )
    try:
        creds = store.load()
    except (NotRegisteredError, CredentialsError, StateDirAccessError) as err:
        problems.insert(0, err.message)
        hints.insert(0, err.hint or "run `hublink register --force`")
        creds = None
    if problems:
        return creds, Check("credentials", "fail", "; ".join(problems), "; ".join(hints))
    assert creds is not None
    detail = f"hub {creds.hub_id} ({creds.slug}), registered {creds.registered_at:%Y-%m-%d}"
    if creds.cloud_url.rstrip("/") != settings.cloud_url:
        return creds, Check(
            "credentials",
            "warn",
            f"{detail}, but with {creds.cloud_url}, not cloud_url = {settings.cloud_url}",
            "set cloud_url back, or enroll with the new Cloud: hublink register --force",
        )
    return creds, Check("credentials", "pass", detail)


def dir_check(name: str, path: Path, *, required: bool) -> Check:
    """``state_dir`` / ``runtime_dir``: exists and writable."""
    if not path.is_dir():
        if required:
            return Check(
                name,
                "fail",
                f"{path} does not exist",
                "systemd creates it (StateDirectory=hublink); by hand: "
                f"install -d -m 0700 -o hublink -g hublink {path}",
            )
        return Check(
            name,
            "warn",
            f"{path} does not exist (the daemon needs it for control.sock)",
            "systemd creates it at start (RuntimeDirectory=hublink); by hand, create it "
            "or set runtime_dir",
        )
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return Check(
            name,
            "fail",
            f"{path} is not writable by {user_name(os.geteuid())}: {err.strerror}",
            f"run as the hublink user, or chown hublink: {path}",
        )
    return Check(name, "pass", f"{path} is writable")


def disk_space_check(path: Path) -> Check:
    """``disk_space``: enough free space at ``path`` for the outbox and backups."""
    try:
        free = shutil.disk_usage(path).free
    except OSError as err:
        return Check("disk_space", "skip", f"cannot measure free space at {path}: {err.strerror}")
    shown = f"{free / 1024 / 1024:.0f} MiB free at {path}"
    hint = "free some space: the outbox and backups need it"
    if free < FAIL_FREE_BYTES:
        return Check("disk_space", "fail", shown, hint)
    if free < WARN_FREE_BYTES:
        return Check("disk_space", "warn", shown, hint)
    return Check("disk_space", "pass", shown)


def database_check(settings: Settings) -> Check:
    """Open ``backup.database`` the way a backup does (read-only, one read transaction)."""
    name = "backup_database"
    database = settings.backup.database
    if database is None:
        return Check(name, "skip", "backup.database is not set (backup requests are refused)")
    header = _database_header(database)
    if isinstance(header, Check):
        return header
    wal = len(header) > 19 and header[18] == 2
    error = _read_once(database)
    if error:
        return Check(name, "fail", f"{database} cannot be read: {error}", _DB_ACCESS_HINT)
    mode = "WAL" if wal else "rollback-journal"
    if wal and not os.access(database.parent, os.W_OK):
        return Check(
            name,
            "warn",
            f"{database} is in WAL mode and {database.parent} is not writable by "
            f"{user_name(os.geteuid())}: reading works only while the Hub keeps its -shm file",
            "SQLite readers of a WAL database update its -shm file: ReadWritePaths= "
            "and group write access to the folder (README: Install, backups)",
        )
    return Check(name, "pass", f"{database} reads fine ({mode} mode)")


_DB_ACCESS_HINT = "give hublink access with a drop-in (README: Install, backups)"


def _database_header(database: Path) -> bytes | Check:
    name = "backup_database"
    try:
        with database.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return Check(name, "fail", f"{database} does not exist", "check backup.database")
    except OSError as err:
        user = user_name(os.geteuid())
        return Check(
            name, "fail", f"{database} cannot be read by {user}: {os_reason(err)}", _DB_ACCESS_HINT
        )
    if not header.startswith(SQLITE_MAGIC):
        return Check(name, "fail", f"{database} is not a SQLite database", "check backup.database")
    return header


def _read_once(database: Path) -> str | None:
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=2.0, isolation_level=None)
    except sqlite3.Error as err:
        return str(err)
    try:
        connection.execute("BEGIN")
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        connection.execute("ROLLBACK")
    except sqlite3.Error as err:
        return str(err)
    finally:
        connection.close()
    return None
