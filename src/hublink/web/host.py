"""The local page as the daemon runs it: served when ``web.enabled``, never fatal.

A ``web.listen`` that cannot be bound (port in use, address not on this box)
or a setup code that cannot be read is logged and kept for ``status`` and
doctor; the daemon goes on linking without the page (contract section 9).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from hublink.config import WebSettings
from hublink.errors import WebListenError

if TYPE_CHECKING:
    from hublink.statusreport import WebReport
    from hublink.web.actions import PageActions
    from hublink.web.server import PageServer

log = structlog.get_logger(__name__)


class PageHost:
    """The daemon's page: its server once started, or why it could not start."""

    def __init__(self, settings: WebSettings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.error: str | None = None
        self._server: PageServer | None = None

    @property
    def url(self) -> str | None:
        """Where a browser on this box opens the page, or None while it is not served."""
        return self._server.url if self._server is not None else None

    async def start(self, actions: Callable[[], PageActions]) -> None:
        """Serve the page with ``actions()`` when ``web.enabled``; never raises for a failure."""
        if not self.settings.enabled:
            return
        # Imported only when the page is on: Jinja2 and Babel are not part of a
        # daemon without it (bench/bench_page.py measures the difference).
        from hublink.web.server import serve_page

        try:
            self._server = await serve_page(self.settings, actions(), self.state_dir)
        except WebListenError as err:
            # The link matters more than the page: go on without it.
            self.error = err.message
            log.error(
                "the local page is not served; the daemon goes on without it",
                listen=self.settings.listen,
                error=err.message,
                hint=err.hint,
            )

    async def stop(self) -> None:
        """Stop serving (open requests get a few seconds)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    def report(self) -> WebReport:
        """The status object's ``web``."""
        return {
            "enabled": self.settings.enabled,
            "listen": self.settings.listen,
            "url": self.url,
            "error": self.error,
        }
