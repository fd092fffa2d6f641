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
    from hublink.link.connection import Link as Link
    from hublink.link.dispatch import Dispatcher as Dispatcher
    from hublink.link.events import queue_event as queue_event
    from hublink.link.hooks import HookRunner as HookRunner
    from hublink.link.messages import parse_inbound as parse_inbound
    from hublink.link.messages import validate_event as validate_event
    from hublink.link.notices import Notices as Notices
    from hublink.link.notices import StateStore as StateStore
    from hublink.link.outbox import AsyncOutbox as AsyncOutbox
    from hublink.link.outbox import Outbox as Outbox

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "connection": ["Link"],
        "dispatch": ["Dispatcher"],
        "events": ["queue_event"],
        "hooks": ["HookRunner"],
        "messages": ["parse_inbound", "validate_event"],
        "notices": ["Notices", "StateStore"],
        "outbox": ["AsyncOutbox", "Outbox"],
    },
)
