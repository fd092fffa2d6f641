"""The exceptions hublink raises, each knowing its exit code.

Exit codes are the contract's (section 5); only ``hublink.cli`` turns an error
into one.

    HublinkError                     1  failure not covered below
     ├── UsageError                  2  wrong usage
     │    └── InvalidEvent           2  an event to queue does not validate
     │         └── EventTooLargeError 2  an event over outbox.max_event_size
     ├── ConfigError                78  invalid config
     │    ├── NotRegisteredError    78  no credentials yet
     │    ├── AlreadyRegisteredError 78 credentials exist; register needs --force
     │    ├── CredentialsError      78  credentials unreadable or invalid
     │    └── StateDirAccessError   78  the state dir belongs to another user
     ├── CloudError                  1  the Cloud answered, but not as hoped
     │    ├── CloudUnreachableError 69  no answer at all (after retries)
     │    ├── CloudAuthError        77  wrong password, hub credential rejected
     │    │    └── SessionExpiredError 77  the owner's refresh token was refused
     │    └── CloudResponseError     1  an answer hublink cannot use
     ├── LockHeldError               1  another process holds a lock of the state dir
     ├── DaemonLockedError           1  another daemon runs on the same state dir
     ├── DaemonRunningError          1  another daemon answers on the control socket
     ├── TunnelError                 1  frpc missing or failing
     ├── BackupError                 1  a backup or restore failed
     │    └── BackupCancelled        1  stopped from outside (the daemon shuts down)
     └── OutboxError                 1  the outbox refused an event
          └── OutboxFullError        1  outbox.max_pending reached

Two errors are not a user's: ``hublink.link.messages.BadFrame`` (a dropped
inbound frame, a ``ValueError``: the link logs it and goes on) and its
``UnknownMessageType``; they never leave the link.

Every message says what went wrong and, through ``hint``, what to do next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_NOPERM = 77
EXIT_CONFIG = 78


class HublinkError(Exception):
    """Base of every error hublink reports to its user."""

    exit_code: ClassVar[int] = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(HublinkError):
    """The command line was wrong."""

    exit_code = EXIT_USAGE


class InvalidEvent(UsageError):
    """An event the Hub application asked to queue does not validate; ``problems`` names each."""

    def __init__(self, message: str, *, problems: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class EventTooLargeError(InvalidEvent):
    """An event whose frame is over ``outbox.max_event_size`` bytes: refused, never queued."""


class ConfigError(HublinkError):
    """The configuration is invalid."""

    exit_code = EXIT_CONFIG


class NotRegisteredError(ConfigError):
    """There are no credentials: the hub was never registered."""


class AlreadyRegisteredError(ConfigError):
    """Credentials exist already and ``register`` was not told to replace them."""


class CredentialsError(ConfigError):
    """The credentials file exists but cannot be used."""


class StateDirAccessError(ConfigError):
    """The state dir, or a file in it, is not this user's (``sudo -u hublink`` forgotten).

    ``path`` is what could not be used and ``state_dir`` its folder, so the
    CLI can word the hint with the command that was typed
    (:func:`hublink.statedir.access_denied`).
    """

    def __init__(
        self, message: str, *, path: Path, state_dir: Path, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.state_dir = state_dir


class CloudError(HublinkError):
    """The Cloud answered in a way hublink cannot proceed with."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class CloudUnreachableError(CloudError):
    """The Cloud could not be reached, even after retries."""

    exit_code = EXIT_UNAVAILABLE


class CloudAuthError(CloudError):
    """The Cloud refused the credentials."""

    exit_code = EXIT_NOPERM


class SessionExpiredError(CloudAuthError):
    """The owner's login session ended (refresh refused): log in again."""


class CloudResponseError(CloudError):
    """The Cloud's answer was an error or did not validate."""


class LockHeldError(HublinkError):
    """Another process holds a lock of the state dir."""


class DaemonLockedError(HublinkError):
    """Another daemon holds the state dir."""


class DaemonRunningError(HublinkError):
    """Another daemon already answers on the control socket."""


class TunnelError(HublinkError):
    """The frp tunnel cannot run."""


class BackupError(HublinkError):
    """A backup or restore failed."""


class BackupCancelled(BackupError):
    """The backup was stopped from outside (the daemon is shutting down)."""


class OutboxError(HublinkError):
    """An event could not be queued."""


class OutboxFullError(OutboxError):
    """The outbox holds ``outbox.max_pending`` events already."""
