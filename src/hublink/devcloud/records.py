"""What the reference Cloud knows about each hub's link, and the views it hands out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from hublink.devcloud.store import StoredHub


@dataclass(frozen=True)
class HubRecord(StoredHub):
    """A snapshot of one hub: its registration and the state of its link."""

    last_heartbeat: datetime | None
    online: bool
    connected: bool

    def public(self) -> dict[str, Any]:
        """The record as JSON for the admin API, without the token."""
        return {
            "hub_id": self.hub_id,
            "slug": self.slug,
            "name": self.name,
            "address": self.address,
            "owner_email": self.owner_email,
            "tunnel_port": self.tunnel_port,
            "revoked": self.revoked,
            "last_heartbeat": None if self.last_heartbeat is None else iso(self.last_heartbeat),
            "online": self.online,
            "connected": self.connected,
        }


@dataclass
class Frame:
    """One WebSocket frame as it arrived, valid or not."""

    received_at: datetime
    data: str | bytes
    valid: bool

    def as_dict(self) -> dict[str, Any]:
        """The frame as a plain dict (what :meth:`DevCloud.frames` returns)."""
        return {"received_at": self.received_at, "data": self.data, "valid": self.valid}


@dataclass
class Handshake:
    """One WebSocket handshake as it reached the Cloud, refused or not."""

    #: ``time.monotonic()`` when the request arrived: arrivals are compared, not dated.
    at: float
    #: 101 once upgraded; the HTTP status of a refusal (401, 403, an injected 503);
    #: None while the answer is still being decided.
    status: int | None = None


@dataclass
class HubLink:
    """The in-memory side of a hub: its socket and what came through it.

    Kept by the :class:`DevCloud` object, so it survives a stop and start of
    the same object (but not a new process).
    """

    socket: web.WebSocketResponse | None = None
    #: The socket's TCP connection, so a test can drop it without a close frame.
    transport: asyncio.Transport | None = None
    connections: int = 0
    last_heartbeat: datetime | None = None
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    seen_ids: set[str] = field(default_factory=set)
    frames: list[Frame] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    #: Every handshake attempt, in arrival order (a reconnect storm's histogram).
    handshakes: list[Handshake] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        """Whether a socket is open right now."""
        return self.socket is not None and not self.socket.closed


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with a ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")
