"""``hublink devcloud``: serve the reference Cloud until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

from hublink.devcloud.server import DevCloud
from hublink.errors import HublinkError


def default_data_dir() -> Path:
    """Where ``hublink devcloud`` keeps its state: ``$XDG_CACHE_HOME/hublink-devcloud``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hublink-devcloud"


async def serve(
    cloud: DevCloud, host: str, port: int, on_ready: Callable[[DevCloud], None]
) -> None:
    """Start ``cloud`` on ``host:port``, call ``on_ready``, and serve until a stop signal.

    Raises:
        HublinkError: the address cannot be listened on.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stopping.set)
    try:
        try:
            await cloud.start(host, port)
        except OSError as err:
            raise HublinkError(
                f"the reference Cloud cannot listen on {host}:{port}: {err.strerror or err}",
                hint="choose another --port, or stop what already uses it",
            ) from None
        try:
            on_ready(cloud)
            await stopping.wait()
        finally:
            await cloud.stop()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
