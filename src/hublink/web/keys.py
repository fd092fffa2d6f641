"""The typed keys under which the application keeps its parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from hublink.web.actions import PageActions
    from hublink.web.ratelimit import RateLimiter
    from hublink.web.render import Renderer
    from hublink.web.sessions import Session, SessionStore

ACTIONS_KEY: web.AppKey[PageActions] = web.AppKey("actions")
SESSIONS_KEY: web.AppKey[SessionStore] = web.AppKey("sessions")
RENDERER_KEY: web.AppKey[Renderer] = web.AppKey("renderer")
HOSTS_KEY: web.AppKey[frozenset[str]] = web.AppKey("hosts")
CODE_KEY: web.AppKey[str] = web.AppKey("code")
#: Wrong setup codes and wrong passwords are counted apart.
CODE_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("code_limiter")
PASSWORD_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("password_limiter")

#: The visitor's session, set by the session middleware on every request.
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("session")
#: A POST's fields, read once by the CSRF middleware.
FORM_KEY: web.RequestKey[dict[str, str]] = web.RequestKey("form")
#: The request's language, chosen once.
LANGUAGE_KEY: web.RequestKey[str] = web.RequestKey("language")
