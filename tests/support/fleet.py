"""A fleet of hubs in one process: many :class:`hublink.link.connection.Link` on one loop.

The reconnect storm needs a thousand hubs; a thousand daemons would need
50 GB. Each hub here is the real link (the same code ``hublink run`` runs,
reconnect policy and spread included) with its own credentials and live
state; the outbox, the notices and the dispatcher are shared, since a storm
is about handshakes, not events. Run as a child process, so that the Cloud's
clock is not slowed down by the fleet::

    PYTHONPATH=tests python -m support.fleet FLEET.json

``FLEET.json``: ``{"cloud_url", "state_dir", "websocket": {...}, "hubs":
[{"hub_id", "slug", "tunnel_port", "tunnel_token"}, ...]}``. It prints
``fleet running N`` once every link is started, and runs until SIGTERM. What
a daemon does once per hub but the fleet would do a thousand times over in one
process (log lines, the log masking's scan, the proxy lookup in a large
environment) is trimmed, so that the storm measures the links, not the crowd.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from hublink.config import Settings, TunnelSettings, WebSocketSettings
from hublink.credentials import Credentials
from hublink.link.connection import Link
from hublink.link.dispatch import Dispatcher
from hublink.link.notices import StateStore
from hublink.link.outbox import AsyncOutbox
from hublink.live import LiveState
from hublink.logs import configure, forget_secret


def write_fleet_file(
    path: Path,
    *,
    cloud_url: str,
    state_dir: Path,
    websocket: dict[str, float],
    hubs: list[dict[str, Any]],
) -> Path:
    """Write the fleet's description for :func:`main`; ``path``."""
    data = {
        "cloud_url": cloud_url,
        "state_dir": str(state_dir),
        "websocket": websocket,
        "hubs": hubs,
    }
    path.write_text(json.dumps(data))
    return path


async def run_fleet(description: dict[str, Any]) -> None:
    """Run one Link per hub of ``description`` until SIGTERM."""
    state_dir = Path(description["state_dir"])
    settings = Settings(
        cloud_url=description["cloud_url"],
        state_dir=state_dir,
        runtime_dir=state_dir / "run",
        tunnel=TunnelSettings(enabled=False),
        websocket=WebSocketSettings(**description["websocket"]),
    )
    store = StateStore.load(state_dir)
    outbox = await AsyncOutbox.open(state_dir)
    dispatcher = Dispatcher(settings, store, outbox)
    now = datetime.now(UTC)
    links = [
        Link(
            settings,
            Credentials(
                hub_id=uuid.UUID(hub["hub_id"]),
                slug=hub["slug"],
                tunnel_port=hub["tunnel_port"],
                tunnel_token=SecretStr(hub["tunnel_token"]),
                cloud_url=description["cloud_url"],
                registered_at=now,
            ),
            LiveState(),
            outbox,
            dispatcher,
        )
        for hub in description["hubs"]
    ]
    # Each Link registered its token for log masking, as a daemon does with its one
    # token. A thousand in one process would make every log value's scan a thousand
    # times dearer than on any real hub, and slow the storm down for that reason
    # alone; hublink never logs a token anyway, masking is only the safety net.
    for hub in description["hubs"]:
        forget_secret(hub["tunnel_token"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(link.run()) for link in links]
            sys.stdout.write(f"fleet running {len(tasks)}\n")
            sys.stdout.flush()
            await stop.wait()
            for task in tasks:
                task.cancel()
    finally:
        await outbox.close()
        await store.aclose()


def main(argv: list[str]) -> int:
    """``python -m support.fleet FLEET.json``."""
    # Errors only: each of a thousand links losing its link logs a warning, which on
    # a real hub is one line and here would be a thousand in the same second.
    configure(level="error", fmt="console", stream=sys.stderr)
    description = json.loads(Path(argv[1]).read_text())
    asyncio.run(run_fleet(description))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
