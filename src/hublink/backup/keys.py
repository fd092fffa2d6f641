"""Who can read a backup: the hub's own age identity plus the owner's recipients.

The hub's identity lives in ``{state_dir}/backup-identity.txt`` (contract
section 4) in the format ``age-keygen`` writes, so the standard tool reads it:
``age -d -i backup-identity.txt``. Because that file dies with the Hub box, the
owner should add a key of their own to ``backup.recipients``; this module also
says whether they did.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import structlog
from pyrage import IdentityError, RecipientError, ssh, x25519

from hublink.clock import iso_z, utc_now
from hublink.config import Settings
from hublink.errors import BackupError, ConfigError
from hublink.fsutil import atomic_write, loose_permissions
from hublink.statedir import BACKUP_IDENTITY

log = structlog.get_logger(__name__)

_AGE_SECRET_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 (a format marker, not a secret)
_SSH_KEY_PREFIXES = ("ssh-ed25519 ", "ssh-rsa ")

#: Shown by ``register`` and ``status`` while only the hub can decrypt its backups.
NO_OWNER_RECIPIENT_REMINDER = (
    "no recipient of your own is configured in backup.recipients: only this box's "
    "backup-identity.txt can decrypt its backups, and it is lost with the box; "
    "add your age (age1…) or SSH public key there"
)

# pyrage ships no type information: its keys are Any to mypy, named here for the reader.
#: An age X25519 or SSH public key that pyrage encrypts to.
Recipient: TypeAlias = Any
#: An age X25519 or SSH private key that pyrage decrypts with.
Identity: TypeAlias = Any


def identity_path(state_dir: Path) -> Path:
    """``{state_dir}/backup-identity.txt``."""
    return state_dir / BACKUP_IDENTITY


def ensure_identity(state_dir: Path) -> x25519.Identity:
    """The hub's own X25519 identity, generated (0600, atomically) on first use.

    Raises:
        BackupError: the file exists but holds no usable age identity; it is
            never replaced silently, since older backups need it.
    """
    path = identity_path(state_dir)
    if path.exists():
        return _load_hub_identity(path)
    identity = x25519.Identity.generate()
    try:
        atomic_write(path, identity_file_text(identity).encode())
    except OSError as err:
        raise BackupError(
            f"cannot write the backup identity {path}: {err.strerror or err}",
            hint=f"make {state_dir} writable by hublink, with free space",
        ) from None
    log.info("generated the hub's backup identity", path=str(path))
    return identity


def identity_file_text(identity: x25519.Identity, *, now: datetime | None = None) -> str:
    """The identity in ``age-keygen``'s format: two comment lines, then the secret key."""
    created = iso_z(now or utc_now())
    return f"# created: {created}\n# public key: {identity.to_public()}\n{identity}\n"


def _load_hub_identity(path: Path) -> x25519.Identity:
    if loose_permissions(path):
        log.warning("the backup identity is readable by others; chmod 600 it", path=str(path))
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        # A folder or an unreadable file in its place: named, and left alone.
        raise BackupError(
            f"cannot read the backup identity {path}: {err.strerror or err}",
            hint="make it the age identity file hublink wrote (mode 0600, owned by hublink); "
            "backups made with it need it",
        ) from None
    identities = parse_age_identities(text)
    if len(identities) != 1:
        raise BackupError(
            f"{path} does not hold exactly one age identity",
            hint="restore it from a copy; backups made with the old identity need it",
        )
    return identities[0]


def parse_age_identities(text: str) -> list[x25519.Identity]:
    """Every ``AGE-SECRET-KEY-1…`` line of an age identity file; comments are skipped.

    Raises:
        BackupError: a line is neither a comment nor a valid age secret key
            (the message never repeats the line: it may be a secret).
    """
    identities = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if not line.startswith(_AGE_SECRET_PREFIX):
                raise IdentityError("not an age secret key")
            identities.append(x25519.Identity.from_str(line))
        except IdentityError:
            raise BackupError(
                f"line {number} of the identity file is not an age secret key "
                f"({_AGE_SECRET_PREFIX}…)",
                hint="pass the file age-keygen wrote, or an OpenSSH private key",
            ) from None
    return identities


def load_identities(path: Path) -> list[Identity]:
    """The identities in ``path``: an age identity file or an unencrypted OpenSSH private key.

    Raises:
        BackupError: the file is missing, unreadable, or holds no usable key.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BackupError(f"cannot read the identity file {path}: {err.strerror}") from None
    if b"-----BEGIN" in data:
        return [_ssh_identity(path, data)]
    identities = parse_age_identities(data.decode("utf-8", errors="replace"))
    if not identities:
        raise BackupError(
            f"{path} holds no age identity",
            hint="pass the hub's backup-identity.txt, your own age identity, or SSH private key",
        )
    return identities


def _ssh_identity(path: Path, data: bytes) -> ssh.Identity:
    try:
        return ssh.Identity.from_buffer(data)
    except IdentityError as err:
        raise BackupError(
            f"{path} is not a usable SSH private key ({err})",
            hint="an SSH key protected by a passphrase must be decrypted first "
            "(ssh-keygen -p), or use age -d with it",
        ) from None


def parse_recipient(entry: str) -> Recipient:
    """An age (``age1…``) or SSH (``ssh-ed25519``/``ssh-rsa``) public key.

    Raises:
        ConfigError: the entry is not a valid public key; the message names it.
    """
    text = entry.strip()
    try:
        if text.startswith("age1"):
            return x25519.Recipient.from_str(text)
        if text.startswith(_SSH_KEY_PREFIXES):
            return ssh.Recipient.from_str(text)
    except RecipientError as err:
        raise ConfigError(
            f"backup.recipients entry {_shown(text)} is not a valid public key ({err})",
            hint="copy it again from `age-keygen -y` or your ~/.ssh/id_ed25519.pub",
        ) from None
    raise ConfigError(
        f"backup.recipients entry {_shown(text)} is neither an age (age1…) "
        "nor an SSH (ssh-ed25519/ssh-rsa) public key",
        hint="fix backup.recipients in the config file",
    )


def _shown(entry: str) -> str:
    # Public keys are not secrets, but a pasted private key might be; show a prefix only.
    return repr(entry if len(entry) <= 100 else entry[:97] + "...")


def owner_recipients(settings: Settings) -> list[Recipient]:
    """Every ``backup.recipients`` entry, parsed; the hub's own key comes on top of these.

    Raises:
        ConfigError: an entry is invalid (all are checked before any backup starts).
    """
    return [parse_recipient(entry) for entry in settings.backup.recipients]


def has_owner_recipient(settings: Settings) -> bool:
    """Whether someone other than the hub itself can decrypt its backups."""
    return bool(settings.backup.recipients)
