"""Events queued the way another process queues them: straight into the daemon's outbox."""

from __future__ import annotations

from typing import Any

from hublink.config import Settings
from hublink.link.messages import validate_event
from hublink.link.outbox import Outbox

#: A ``plugin_installed`` event's data, as the Hub application sends it.
PLUGIN = {"plugin_id": "inventory", "version": "2.0", "installed_at": "2026-01-01T00:00:00Z"}


def make_plugin_event(n: int) -> Any:
    """The ``plugin_installed`` event of plugin ``pN``, validated as the outbox takes it."""
    return validate_event("plugin_installed", {**PLUGIN, "plugin_id": f"p{n}"})


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
