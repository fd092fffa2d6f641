"""The link to the Cloud (contract sections 2 and 6).

connection  the WebSocket: heartbeats, reconnects with backoff, the drain, receiving
handshake   the URL and options of every connection (the link's and doctor's)
messages    the wire: every frame as a pydantic model, both directions
outbox      the durable queue of events for the Cloud (SQLite, at-least-once)
events      queuing an event from the Hub application: the one path
eventdata   an event's JSON text, parsed strictly; what JSON cannot carry
dispatch    what each Cloud message does (a handler registry)
hooks       the commands run for Cloud messages
notices     what the Cloud told us: plugin updates, revoked users, the last backup

The names below load their module when first used (:mod:`hublink._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hublink._lazy import lazy_exports

if TYPE_CHECKING:
    from hublink.link.connection import Link
    from hublink.link.dispatch import Dispatcher
    from hublink.link.events import queue_event
    from hublink.link.hooks import HookRunner
    from hublink.link.messages import parse_inbound, validate_event
    from hublink.link.notices import Notices, StateStore
    from hublink.link.outbox import AsyncOutbox, Outbox

_EXPORTS = {
    "Link": "connection",
    "Dispatcher": "dispatch",
    "queue_event": "events",
    "HookRunner": "hooks",
    "parse_inbound": "messages",
    "validate_event": "messages",
    "Notices": "notices",
    "StateStore": "notices",
    "AsyncOutbox": "outbox",
    "Outbox": "outbox",
}
__all__ = [
    "AsyncOutbox",
    "Dispatcher",
    "HookRunner",
    "Link",
    "Notices",
    "Outbox",
    "StateStore",
    "parse_inbound",
    "queue_event",
    "validate_event",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
