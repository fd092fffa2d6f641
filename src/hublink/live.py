"""The daemon's live state: one small object the tasks update and the control API reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from hublink.clock import iso_z, utc_now

if TYPE_CHECKING:
    from hublink.statusreport import LinkReport, TunnelReport

LinkStateName = Literal["connecting", "connected", "backoff", "unauthorized", "stopped"]
TunnelStateName = Literal["disabled", "starting", "running", "backoff", "failed", "stopped"]


@dataclass(slots=True)
class LinkStatus:
    """The WebSocket link as ``hublink status`` shows it."""

    state: LinkStateName = "connecting"
    last_heartbeat_at: datetime | None = None
    reconnects: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    connected_since: datetime | None = None


@dataclass(slots=True)
class TunnelStatus:
    """The frpc child as ``hublink status`` shows it."""

    state: TunnelStateName = "disabled"
    pid: int | None = None
    restarts: int = 0
    last_error: str | None = None


@dataclass
class LiveState:
    """Everything a running daemon knows that the files do not."""

    link: LinkStatus = field(default_factory=LinkStatus)
    tunnel: TunnelStatus = field(default_factory=TunnelStatus)
    started_at: datetime = field(default_factory=utc_now)
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously, cheaply) after every change."""
        self._listeners.append(listener)

    def changed(self) -> None:
        """Tell the listeners (the systemd STATUS line, for one) that something moved."""
        for listener in self._listeners:
            listener()

    def set_link(self, state: LinkStateName, **fields: Any) -> None:
        """Update the link's state and any of its other fields, then notify.

        Raises:
            TypeError: a field :class:`LinkStatus` does not have (a typo must not pass).
        """
        self.link = dataclasses.replace(self.link, state=state, **fields)
        self.changed()

    def set_tunnel(self, state: TunnelStateName, **fields: Any) -> None:
        """Update the tunnel's state and any of its other fields, then notify.

        Raises:
            TypeError: a field :class:`TunnelStatus` does not have.
        """
        self.tunnel = dataclasses.replace(self.tunnel, state=state, **fields)
        self.changed()

    def reset(self, *, tunnel: TunnelStateName) -> None:
        """Forget the link and the tunnel (no credentials to run them with): the link
        ``stopped``, the tunnel ``tunnel``, counters and errors cleared; then notify."""
        self.link = LinkStatus(state="stopped")
        self.tunnel = TunnelStatus(state=tunnel)
        self.changed()

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        text = f"link {self.link.state}, tunnel {self.tunnel.state}"
        if self.link.last_error:
            # Connected with an error: the outbox cannot be written (a full disk).
            text += f" ({self.link.last_error})"
        return text

    def link_report(self) -> LinkReport:
        """The contract's ``websocket`` object."""
        link = self.link
        return {
            "state": link.state,
            "last_heartbeat_at": iso_z(link.last_heartbeat_at, precise=True),
            "reconnects": link.reconnects,
            "last_error": link.last_error,
            "next_attempt_at": iso_z(link.next_attempt_at, precise=True),
        }

    def tunnel_report(self) -> TunnelReport:
        """The contract's ``tunnel`` object."""
        tunnel = self.tunnel
        return {
            "state": tunnel.state,
            "pid": tunnel.pid,
            "restarts": tunnel.restarts,
            "last_error": tunnel.last_error,
        }
