"""Fault injection: make the next requests to a route fail or stall on purpose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

DRAIN_CHUNK = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """What the next ``remaining`` requests under ``route`` get instead of an answer."""

    route: str
    status: int | None
    remaining: int
    #: Seconds (rounded up), or a text sent as it is (a date, or garbage on purpose).
    retry_after: float | str | None
    body: str | None
    content_type: str
    delay: float

    def response(self) -> web.Response:
        """The injected answer."""
        assert self.status is not None
        headers = {}
        if isinstance(self.retry_after, str):
            headers["Retry-After"] = self.retry_after
        elif self.retry_after is not None:
            # Whole seconds is what the RFC allows; round up so it is never shorter.
            headers["Retry-After"] = str(max(0, int(-(-self.retry_after // 1))))
        body = self.body
        if body is None:
            body = json.dumps({"detail": f"injected failure (HTTP {self.status})"})
        return web.Response(
            status=self.status, text=body, content_type=self.content_type, headers=headers
        )


class Faults:
    """The pending faults, consumed in the order they were added."""

    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault."""
        if fault.remaining > 0:
            self._pending.append(fault)

    def take(self, path: str) -> Fault | None:
        """The fault for a request to ``path``, counting it as used."""
        for fault in self._pending:
            if path.startswith(fault.route):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._pending.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        """Forget every pending fault."""
        self._pending.clear()

    def middleware(self) -> Middleware:
        """An aiohttp middleware applying the faults."""

        @web.middleware
        async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            fault = self.take(request.path)
            if fault is None:
                return await handler(request)
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.status is None:
                return await handler(request)
            # Read the body first: a client still streaming an upload then
            # sees the injected status, not a connection reset.
            async for _ in request.content.iter_chunked(DRAIN_CHUNK):
                pass
            return fault.response()

        return apply_faults
