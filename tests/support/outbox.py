"""Events queued the way another process queues them: straight into the daemon's outbox."""

from __future__ import annotations

from hublink.config import Settings
from hublink.link.messages import validate_event
from hublink.link.outbox import Outbox


def queue_events(settings: Settings, count: int, start: int = 0) -> list[str]:
    """Queue ``count`` ``plugin_installed`` events (``plugin-START``…) in the outbox; their ids."""
    outbox = Outbox.open(settings.state_dir, settings.outbox.max_pending)
    try:
        return [
            outbox.put(
                validate_event(
                    "plugin_installed",
                    {
                        "plugin_id": f"plugin-{n}",
                        "version": "1.0.0",
                        "installed_at": "2026-01-01T00:00:00Z",
                    },
                )
            )
            for n in range(start, start + count)
        ]
    finally:
        outbox.close()
