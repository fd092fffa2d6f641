"""The daemon's local doors: the control socket, the metrics listener and the local page.

They start beside the link, not before it: aiohttp (with the two SSL contexts
it builds at import) and the control server's, the page's and the REST
client's modules are most of a cold start, so :meth:`LocalServers.imported`
loads them in a worker thread while the link connects on the event loop
(tests/test_imports.py keeps them off the link's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from hublink.web.host import PageHost

if TYPE_CHECKING:
    from hublink.actions import DaemonActions
    from hublink.config import Settings
    from hublink.link.notices import StateStore
    from hublink.link.outbox import AsyncOutbox
    from hublink.metrics import Metrics, MetricsServer

#: Imported in a worker thread while the link connects: the control socket's
#: and the REST client's aiohttp (the tunnel's admin API client's too), and the
#: page's wiring.
HEAVY_MODULES = (
    "hublink.actions",
    "hublink.control.server",
    "hublink.cloud.client",
)


class LocalServers:
    """The control server (contract section 8), the metrics listener and the page (section 9)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.page = PageHost(settings.web, settings.state_dir)
        self._metrics: MetricsServer | None = None
        # What start() opened, closed in reverse order by stop().
        self._opened = contextlib.AsyncExitStack()
        self._imports: asyncio.Future[list[ModuleType]] | None = None

    async def imported(self) -> None:
        """Wait until :data:`HEAVY_MODULES` are imported (by the first caller's worker thread).

        Then, once, start-up's heap is frozen (:func:`freeze_startup_heap`).
        """
        if self._imports is None:
            self._imports = asyncio.ensure_future(
                asyncio.to_thread(lambda: [importlib.import_module(m) for m in HEAVY_MODULES])
            )
            self._imports.add_done_callback(lambda _: freeze_startup_heap())
        await asyncio.shield(self._imports)

    async def start(
        self, actions: DaemonActions, outbox: AsyncOutbox, store: StateStore, metrics: Metrics
    ) -> None:
        """Listen on the metrics address (if set), the page's and, last, the control socket.

        Raises:
            DaemonRunningError: another daemon answers on the control socket.
            HublinkError: the runtime directory cannot be made.
        """
        await self.imported()
        from hublink.control.server import ControlServer
        from hublink.metrics import MetricsServer

        settings = self.settings
        if settings.metrics.listen is not None:
            # A port it cannot bind is reported (log, status) and the daemon goes on.
            self._metrics = MetricsServer(metrics, settings.metrics.listen)
            self._opened.push_async_callback(self._metrics.stop)
            await self._metrics.start()
        self._opened.push_async_callback(self.page.stop)
        await self.page.start(actions.page)
        # The control socket last: once `hublink status` answers, every door is open.
        control = ControlServer(settings.control_socket, actions, outbox, store, metrics)
        self._opened.push_async_callback(control.stop)
        await control.start()

    @property
    def metrics_error(self) -> str | None:
        """Why the metrics listener is not listening, or None (status's ``metrics.error``)."""
        return self._metrics.error if self._metrics is not None else None

    async def stop(self) -> None:
        """Close what :meth:`start` opened, the control socket first (idempotent)."""
        await self._opened.aclose()


def freeze_startup_heap() -> None:
    """Move everything start-up made out of the cyclic collector's reach (``gc.freeze``).

    Modules, models and settings live as long as the daemon, yet every full
    collection walked them again: 30-45 ms with the loop stopped on this
    project's 2-core reference box, in the middle of whatever the Cloud sent.
    Called once the worker thread's imports are in, before the control socket
    opens: a daemon that answers ``status`` has paid this pause already. One
    collection first, so start-up's own garbage is not kept forever.
    """
    gc.collect()
    gc.freeze()
