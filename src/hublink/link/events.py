"""Queuing an event from the Hub application: the one path for ``hublink send``,
``POST /v1/events`` (contract section 8) and the local page.

An event is validated (:func:`hublink.link.messages.validate_event`), stored
durably in the outbox, and noted in the notices (a queued ``plugin_installed``
clears the matching pending update, contract section 6), in that order: once
:func:`queue_event` returns, the event survives a crash and leaves at the next
drain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from hublink.errors import InvalidEvent
from hublink.link.messages import validate_event

if TYPE_CHECKING:
    from hublink.link.notices import StateStore
    from hublink.link.outbox import Outbox

log = structlog.get_logger(__name__)


def queue_event(outbox: Outbox, notices: StateStore, event_type: str, data: object) -> str:
    """Validate ``data`` as an ``event_type`` event, queue it durably, note it; its id (a UUID).

    Blocking (SQLite with fsync): the daemon runs it on the outbox's worker thread.

    Raises:
        InvalidEvent: ``data`` is not an object, or the event does not validate.
        OutboxError: the outbox is full or cannot be written (nothing was queued).
    """
    if not isinstance(data, dict):
        raise InvalidEvent(
            f"a {event_type} event must be a JSON object",
            problems=[f"data: expected an object, got {type(data).__name__}"],
        )
    event = validate_event(event_type, data)
    event_id = outbox.put(event)
    try:
        notices.record_outbound(event)
    except Exception:
        # The event is queued already; a slip in the notices must not make the
        # caller believe otherwise (and retry, queueing it twice).
        log.exception("cannot note the queued event", event_type=event_type)
    return event_id
