"""The status object's shape (contract section 5): one TypedDict per part.

Kept apart from :mod:`hublink.status`, which builds and prints the object:
building a TypedDict class turns every annotation into a ``ForwardRef``, a few
milliseconds that ``hublink status`` (which only reads the object) need not pay.
Type checkers and the daemon import it; the CLI's quick paths do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NotRequired, TypedDict

if TYPE_CHECKING:
    from hublink.link.notices import LastBackup, PluginUpdate, RevokedUser


class DaemonReport(TypedDict):
    """``daemon``: whether ``hublink run`` holds the state dir, and its pid."""

    running: bool
    pid: int | None
    #: Present (False) only when a daemon holds the state dir but does not answer.
    answering: NotRequired[bool]


class LinkReport(TypedDict):
    """``websocket``: the link's live state; every value null when no daemon runs."""

    state: str | None
    last_heartbeat_at: str | None
    reconnects: int | None
    last_error: str | None
    next_attempt_at: str | None


class TunnelReport(TypedDict):
    """``tunnel``: the frpc child's live state; every value null when no daemon runs."""

    state: str | None
    pid: int | None
    restarts: int | None
    last_error: str | None


class OutboxReport(TypedDict):
    """``outbox``: events waiting, events set aside, damaged outbox files set aside.

    ``dead_letters``: events the Cloud kept refusing (the link dropped each time
    one was sent), kept in ``outbox.sqlite3``'s ``dead_letters`` table.
    ``quarantined``: unreadable ``outbox.sqlite3.corrupt-*`` files moved aside.
    Each is null when the outbox cannot be read.
    """

    pending: int | None
    dead_letters: int | None
    quarantined: int | None


class BackupReport(TypedDict):
    """``backup``: what a backup would read and whom it would encrypt to."""

    database: str | None
    owner_recipients: int


class WebReport(TypedDict):
    """``web``: the local page (contract section 9).

    ``url`` is where a running daemon serves it (None when it does not: no
    daemon, ``web.enabled = false``, or ``error``); ``error`` says why
    ``web.listen`` could not be served. ``setup_url`` (the URL carrying the
    setup code) is added only by ``hublink status`` run by a user who can read
    ``{state_dir}/web-code``; the daemon never puts it here.
    """

    enabled: bool
    listen: str
    url: str | None
    error: str | None
    setup_url: NotRequired[str]


class MetricsReport(TypedDict):
    """``metrics``: the Prometheus endpoint on TCP (contract section 10)."""

    #: ``metrics.listen``; null when unset (the control socket serves /metrics either way).
    listen: str | None
    #: Why a running daemon does not serve it there (port in use, …); null when it does.
    error: str | None


class StatusReport(TypedDict):
    """The object of ``hublink status --json`` and ``GET /v1/status`` (contract section 5).

    A TypedDict rather than a model: it is JSON on both sides of the control
    socket, and readers (the CLI, doctor, the page, the Hub application) index it
    the same way whether it was built here or parsed from a daemon's answer.
    """

    registered: bool
    hub_id: str | None
    slug: str | None
    name: str | None
    cloud_url: str
    daemon: DaemonReport
    websocket: LinkReport
    tunnel: TunnelReport
    outbox: OutboxReport
    plugin_updates: list[PluginUpdate]
    revoked_users: list[RevokedUser]
    #: Older revocations no longer listed (``notices.max_revoked_users``).
    revoked_users_dropped: int
    last_backup: LastBackup | None
    backup: BackupReport
    #: When the next scheduled backup is due (contract section 11); null without
    #: ``backup.schedule`` or a running daemon.
    next_backup_at: str | None
    metrics: MetricsReport
    version: str
    state_dir: str
    web: WebReport
