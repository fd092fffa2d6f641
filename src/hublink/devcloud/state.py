"""What the reference Cloud knows, and what its routes act on: one object, no server in it.

The routes (rest, ws, backups, admin) reach it through :data:`STATE_KEY`; the
server class (:class:`hublink.devcloud.server.DevCloud`) extends it with the
lifecycle (listening, frps), so tests inspect and steer the same object.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from hublink.devcloud.faults import Fault, Faults
from hublink.devcloud.records import Handshake, HubLink, HubRecord
from hublink.devcloud.store import CloudStore, StoredBackup
from hublink.devcloud.tokens import TokenIssuer, User

#: The largest frame a hub may send by default: far above a real Cloud's 1 MiB,
#: since tests send big frames on purpose (set ``max_frame_size`` to mimic one).
MAX_FRAME_SIZE = 64 * 1024 * 1024

log = structlog.get_logger(__name__)

DEMO_EMAIL = "owner@example.com"
DEMO_PASSWORD = "password123"  # noqa: S105 - the documented demo account
DEFAULT_PORT_RANGE = (7001, 7100)
#: Close code for a hub whose credentials were revoked (the contract's 4003).
REVOKED_CODE = 4003


@dataclass(frozen=True, kw_only=True)
class CloudOptions:
    """How a reference Cloud behaves, given once to :class:`CloudState` (or ``DevCloud``).

    Attributes:
        users: owner accounts, email -> password (None: the demo account).
        offline_after: seconds without a frame from a hub before it shows offline.
        access_ttl: lifetime of an owner's access JWT, in seconds (negative: born expired).
        refresh_ttl: lifetime of an owner's refresh JWT, in seconds.
        port_range: the tunnel ports handed to hubs, both ends included.
        signing_key: the JWT signing key; made by the Cloud when None (tests share
            one: making an RSA key costs tens of milliseconds).
    """

    users: Mapping[str, str] | None = None
    offline_after: float = 300.0
    access_ttl: float = 300
    refresh_ttl: float = 86400
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    signing_key: rsa.RSAPrivateKey | None = None


class CloudState:
    """Accounts, hubs, backups and links of the reference Cloud.

    Hubs and backups live in SQLite under ``data_dir`` (a restarted Cloud still
    knows them); what came through the WebSockets is kept in memory. ``options``
    (:class:`CloudOptions`) say how it behaves; the defaults when None.
    """

    def __init__(self, data_dir: Path, options: CloudOptions | None = None) -> None:
        options = options or CloudOptions()
        self.data_dir = Path(data_dir)
        accounts = {DEMO_EMAIL: DEMO_PASSWORD} if options.users is None else options.users
        self.users = {
            email.lower(): User(id=number, email=email, password=password)
            for number, (email, password) in enumerate(accounts.items(), start=1)
        }
        self.offline_after = options.offline_after
        self.port_range = options.port_range
        self.tokens = TokenIssuer(
            access_ttl=options.access_ttl, refresh_ttl=options.refresh_ttl, key=options.signing_key
        )
        self.faults = Faults()
        #: The largest frame a hub may send; a larger one ends its link (as a real
        #: Cloud's 1 MiB limit does). Far above that by default: tests send big frames.
        self.max_frame_size = MAX_FRAME_SIZE
        self._store: CloudStore | None = None
        self._links: dict[str, HubLink] = {}

    def close_store(self) -> None:
        """Close the SQLite store (reopened on next use)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- state used by the handlers -------------------------------------------

    @property
    def store(self) -> CloudStore:
        """The SQLite store, opened on first use."""
        if self._store is None:
            self._store = CloudStore(self.data_dir / "devcloud.sqlite3")
        return self._store

    def link(self, hub_id: str) -> HubLink:
        """The in-memory link state of a hub (created on first use)."""
        return self._links.setdefault(hub_id, HubLink())

    @staticmethod
    def normalize_id(hub_id: str | uuid.UUID) -> str | None:
        """The canonical text of a hub id, or None when it is not a UUID."""
        try:
            return str(uuid.UUID(str(hub_id)))
        except ValueError:
            return None

    # --- in-process control, for tests and the demo ---------------------------

    def create_hub(
        self, owner_email: str = DEMO_EMAIL, name: str = "Test Hub", address: str = ""
    ) -> dict[str, Any]:
        """Register a hub like the endpoint does: ``{hub_id, slug, tunnel_port, tunnel_token}``.

        Raises:
            PortsExhaustedError: no tunnel port is free.
        """
        slug = _slugify(name)
        while self.store.slug_exists(slug):
            slug = _slugify(name)
        hub = self.store.add_hub(
            hub_id=str(uuid.uuid4()),
            slug=slug,
            name=name,
            address=address,
            owner_email=owner_email,
            port_range=self.port_range,
            tunnel_token=secrets.token_urlsafe(32),
        )
        log.info("devcloud registered a hub", hub_id=hub.hub_id, slug=slug, port=hub.tunnel_port)
        return {
            "hub_id": hub.hub_id,
            "slug": hub.slug,
            "tunnel_port": hub.tunnel_port,
            "tunnel_token": hub.tunnel_token,
        }

    def hub(self, hub_id: str | uuid.UUID) -> HubRecord | None:
        """A snapshot of the hub's registration and link, or None if unknown."""
        key = self.normalize_id(hub_id)
        stored = None if key is None else self.store.get_hub(key)
        if stored is None:
            return None
        link = self._links.get(stored.hub_id, HubLink())
        last = link.last_heartbeat
        online = last is not None and (
            (datetime.now(UTC) - last).total_seconds() <= self.offline_after
        )
        return HubRecord(
            **vars(stored), last_heartbeat=last, online=online, connected=link.connected
        )

    def hubs(self) -> list[HubRecord]:
        """Every registered hub, oldest first."""
        records = (self.hub(stored.hub_id) for stored in self.store.list_hubs())
        return [record for record in records if record is not None]

    def _known_link(self, hub_id: str | uuid.UUID) -> HubLink:
        return self._links.get(self.normalize_id(hub_id) or "", HubLink())

    def heartbeats(self, hub_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """Every heartbeat received, each with ``received_at`` (UTC datetime) added."""
        return [dict(beat) for beat in self._known_link(hub_id).heartbeats]

    def events(self, hub_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """Every other valid message received, in arrival order, duplicates by ``id`` dropped."""
        return [dict(event) for event in self._known_link(hub_id).events]

    def duplicates(self, hub_id: str | uuid.UUID) -> int:
        """How many events were dropped as duplicates."""
        return self._known_link(hub_id).duplicates

    def frames(self, hub_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """Every frame received, invalid and binary ones too: ``{received_at, data, valid}``."""
        return [frame.as_dict() for frame in self._known_link(hub_id).frames]

    def connections(self, hub_id: str | uuid.UUID) -> int:
        """How many WebSocket handshakes of this hub were accepted in total."""
        return self._known_link(hub_id).connections

    def handshakes(self, hub_id: str | uuid.UUID) -> list[Handshake]:
        """Every handshake of this hub that reached the Cloud, refused ones too, oldest first."""
        return list(self._known_link(hub_id).handshakes)

    def close_codes(self, hub_id: str | uuid.UUID) -> list[int | None]:
        """The close code of each ended link of this hub, oldest first."""
        return list(self._known_link(hub_id).close_codes)

    async def push(self, hub_id: str | uuid.UUID, message: dict[str, Any] | str | bytes) -> bool:
        """Send a frame to the hub's open link; whether there was one.

        A dict is sent as JSON text; a str or bytes as-is (bytes as a binary frame).
        """
        socket = self._known_link(hub_id).socket
        if socket is None or socket.closed:
            return False
        try:
            if isinstance(message, bytes):
                await socket.send_bytes(message)
            else:
                text = message if isinstance(message, str) else json.dumps(message)
                await socket.send_str(text)
        except ConnectionError:
            return False
        return True

    async def close_hub(self, hub_id: str | uuid.UUID, code: int = 1001, reason: str = "") -> bool:
        """Close the hub's link with ``code``; whether one was open."""
        socket = self._known_link(hub_id).socket
        if socket is None or socket.closed:
            return False
        await socket.close(code=code, message=reason.encode())
        return True

    def drop_hub(self, hub_id: str | uuid.UUID) -> bool:
        """Cut the hub's TCP connection without a close frame (the hub sees 1006)."""
        link = self._known_link(hub_id)
        if link.transport is None or not link.connected:
            return False
        link.transport.abort()
        return True

    async def revoke(self, hub_id: str | uuid.UUID) -> bool:
        """Revoke the hub: its link closes with 4003, later handshakes get 403."""
        key = self.normalize_id(hub_id)
        if key is None or not self.store.revoke(key):
            return False
        log.info("devcloud revoked a hub", hub_id=key)
        await self.close_hub(key, REVOKED_CODE, "hub revoked")
        return True

    def fail_next(
        self,
        route: str,
        status: int | None,
        count: int = 1,
        *,
        retry_after: float | str | None = None,
        body: str | None = None,
        content_type: str = "application/json",
        delay: float = 0,
    ) -> None:
        """Make the next ``count`` requests whose path starts with ``route`` fail.

        Each waits ``delay`` seconds, then gets ``status`` (with ``Retry-After``
        when given: seconds, or a text sent as is; and ``body`` instead of a JSON
        detail). ``status=None``
        only delays them: a slow Cloud that still answers.
        """
        self.faults.add(
            Fault(
                route=route,
                status=status,
                remaining=count,
                retry_after=retry_after,
                body=body,
                content_type=content_type,
                delay=delay,
            )
        )

    def backups(self, hub_id: str | uuid.UUID) -> list[Path]:
        """The files of the hub's stored backups, oldest first."""
        return [backup.path for backup in self.backup_records(hub_id)]

    def backup_records(self, hub_id: str | uuid.UUID) -> list[StoredBackup]:
        """The hub's stored backups with their metadata, oldest first."""
        key = self.normalize_id(hub_id)
        return [] if key is None else self.store.list_backups(key)


#: How request handlers reach the :class:`CloudState` that serves them.
STATE_KEY: web.AppKey[CloudState] = web.AppKey("hublink_devcloud_state")


def _slugify(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "hub"
    return f"{base}-{secrets.token_hex(3)}"
