"""The page as one aiohttp application the daemon mounts: :func:`build_app`."""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from hublink.config import WebSettings
from hublink.web import routes
from hublink.web.actions import PageActions
from hublink.web.code import code_path, read_or_create_code
from hublink.web.guards import MIDDLEWARES, add_headers, allowed_host_names
from hublink.web.keys import (
    ACTIONS_KEY,
    CODE_KEY,
    CODE_LIMITER_KEY,
    HOSTS_KEY,
    PASSWORD_LIMITER_KEY,
    RENDERER_KEY,
    SESSIONS_KEY,
)
from hublink.web.ratelimit import RateLimiter
from hublink.web.render import Renderer
from hublink.web.sessions import SessionStore

log = structlog.get_logger(__name__)

#: The stylesheet and script.
STATIC_DIR = Path(__file__).parent / "static"
#: Bodies larger than this are cut off by aiohttp itself; forms check a tighter bound.
CLIENT_MAX_SIZE = 64 * 1024


def build_app(
    settings: WebSettings,
    actions: PageActions,
    state_dir: Path,
    *,
    hostname: str | None = None,
) -> web.Application:
    """The local page (contract section 9), locked by the setup code in ``state_dir``.

    Args:
        settings: ``web.listen`` and ``web.language``.
        actions: what the page asks of the daemon.
        state_dir: where ``web-code`` is kept (created there when missing).
        hostname: this box's name for the Host check; ``socket.gethostname()`` by default.
    """
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=CLIENT_MAX_SIZE)
    app[ACTIONS_KEY] = actions
    app[CODE_KEY] = read_or_create_code(state_dir)
    app[SESSIONS_KEY] = SessionStore()
    app[RENDERER_KEY] = Renderer(settings.language)
    app[HOSTS_KEY] = allowed_host_names(hostname)
    app[CODE_LIMITER_KEY] = RateLimiter()
    app[PASSWORD_LIMITER_KEY] = RateLimiter()
    app.on_response_prepare.append(add_headers)
    app.add_routes(routes.ROUTES)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    # The code itself is a secret: the log only says where it is.
    log.info("page setup code ready", code_file=str(code_path(state_dir)))
    return app
