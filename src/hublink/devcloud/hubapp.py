"""A stand-in for the Hub's own web application: what the tunnel exposes, for tests and benches."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

#: The body of its one page.
HELLO = "hello from the hub"


@contextlib.asynccontextmanager
async def hub_app() -> AsyncIterator[int]:
    """Serve :data:`HELLO` at ``/`` on a free loopback port while the block runs; that port."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text=HELLO)

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()
