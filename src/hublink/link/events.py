"""Queuing an event from the Hub application: the one path for ``hublink send``,
``POST /v1/events`` (contract section 8) and the local page.

An event is validated (:func:`hublink.link.messages.validate_event`), stored
durably in the outbox, and noted in the notices (a queued ``plugin_installed``
clears the matching pending update, contract section 6), in that order: once
:func:`queue_event` returns, the event survives a crash and leaves at the next
drain.

What the Cloud gets must be JSON any parser reads back the same
(:func:`hublink.link.eventdata.unsendable`): what it cannot carry faithfully is
refused here with :class:`~hublink.errors.InvalidEvent` (exit 2, HTTP 422)
instead of being queued for a Cloud that would choke on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from hublink.errors import InvalidEvent
from hublink.link.eventdata import unsendable
from hublink.link.messages import validate_event

if TYPE_CHECKING:
    from hublink.link.notices import StateStore
    from hublink.link.outbox import Outbox

log = structlog.get_logger(__name__)


def queue_event(outbox: Outbox, notices: StateStore, event_type: str, data: object) -> str:
    """Validate ``data`` as an ``event_type`` event, queue it durably, note it; its id (a UUID).

    Blocking (SQLite with fsync): the daemon runs it on the outbox's worker thread.

    Raises:
        InvalidEvent: ``data`` is not an object, holds what JSON cannot carry
            faithfully (see :func:`unsendable`), or the event does not validate.
        OutboxError: the outbox is full or cannot be written (nothing was queued).
    """
    if not isinstance(data, dict):
        raise InvalidEvent(
            f"a {event_type} event must be a JSON object",
            problems=[f"data: expected an object, got {type(data).__name__}"],
        )
    problem = unsendable(data)
    if problem is not None:
        raise InvalidEvent(f"the {event_type} event cannot be sent: {problem}", problems=[problem])
    event = validate_event(event_type, data)
    event_id = outbox.put(event)
    try:
        notices.record_outbound(event)
    except Exception:
        # The event is queued already; a slip in the notices must not make the
        # caller believe otherwise (and retry, queueing it twice).
        log.exception("cannot note the queued event", event_type=event_type)
    return event_id
