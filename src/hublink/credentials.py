"""The hub's permanent credentials: ``{state_dir}/credentials.toml``, 0600, atomic, locked."""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import structlog
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from hublink.config import describe_validation_error
from hublink.errors import CredentialsError, NotRegisteredError
from hublink.fsutil import atomic_write, loose_permissions
from hublink.logs import register_secret
from hublink.statedir import CREDENTIALS, CREDENTIALS_LOCK, access_denied, exclusive_lock

log = structlog.get_logger(__name__)


class Credentials(BaseModel):
    """What the Cloud gave this hub at registration; the token is its password."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    hub_id: UUID
    slug: str = Field(min_length=1, max_length=200)
    tunnel_port: int = Field(ge=1, le=65535)
    tunnel_token: SecretStr = Field(min_length=1)
    cloud_url: str = Field(min_length=1)
    registered_at: datetime

    def to_toml(self) -> bytes:
        """The file's bytes, token in clear: only ever written with mode 0600."""
        data = {
            "hub_id": str(self.hub_id),
            "slug": self.slug,
            "tunnel_port": self.tunnel_port,
            "tunnel_token": self.tunnel_token.get_secret_value(),
            "cloud_url": self.cloud_url,
            "registered_at": self.registered_at.astimezone(UTC).replace(microsecond=0),
        }
        header = "# Written by `hublink register`. Keep this file private (mode 0600).\n"
        return header.encode() + tomli_w.dumps(data).encode()


class CredentialStore:
    """Reads and replaces ``credentials.toml`` in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / CREDENTIALS
        self._lock_path = state_dir / CREDENTIALS_LOCK

    def exists(self) -> bool:
        """Whether a credentials file is present (valid or not).

        Raises:
            StateDirAccessError: the state dir belongs to another user (exit 78).
        """
        try:
            return self.path.exists()
        except PermissionError:
            raise access_denied(self.path, self.state_dir) from None

    def load(self) -> Credentials:
        """Read and validate the credentials.

        Raises:
            NotRegisteredError: there is no file.
            StateDirAccessError: the state dir belongs to another user.
            CredentialsError: the file is unreadable, not TOML, or invalid.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise NotRegisteredError(
                f"this hub is not registered ({self.path} does not exist)",
                hint="run `hublink register` to enroll it with the Cloud",
            ) from None
        except PermissionError:
            raise access_denied(self.path, self.state_dir) from None
        except OSError as err:
            # A directory in its place, an I/O error: still a named, exit-78 problem.
            raise CredentialsError(
                f"cannot read {self.path}: {err.strerror or err}",
                hint="make it a regular file written by `hublink register`, or remove it",
            ) from None
        creds = self._parse(raw)
        if loose_permissions(self.path):
            log.warning(
                "credentials file is readable by other users",
                path=str(self.path),
                fix=f"chmod 600 {self.path}",
            )
        register_secret(creds.tunnel_token.get_secret_value())
        return creds

    def _parse(self, raw: bytes) -> Credentials:
        hint = "fix the file by hand, or run `hublink register --force` to enroll again"
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise CredentialsError(f"{self.path} is not valid TOML: {err}", hint=hint) from None
        try:
            return Credentials.model_validate(data)
        except ValidationError as err:
            detail = describe_validation_error(err)
            raise CredentialsError(f"{self.path} is invalid:\n{detail}", hint=hint) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive lock: one enrollment at a time."""
        with exclusive_lock(self._lock_path):
            yield

    def save(self, creds: Credentials) -> None:
        """Replace the file atomically with mode 0600. Call inside :meth:`locked`."""
        register_secret(creds.tunnel_token.get_secret_value())
        atomic_write(self.path, creds.to_toml())

    def remove(self) -> bool:
        """Forget the credentials; whether there were any.

        Raises:
            StateDirAccessError: the state dir belongs to another user.
        """
        with self.locked():
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            except PermissionError:
                raise access_denied(self.path, self.state_dir) from None
        return True
