"""The page's locks: Host check, session, setup-code lock, CSRF and Origin, headers.

Each is a middleware, applied outermost first in :data:`MIDDLEWARES` order:
a request with a foreign ``Host`` is refused before it gets a session, a
locked session sees nothing but the code form, and a POST must carry the
session's CSRF token and come from the page's own origin.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from yarl import URL

from hublink.web.forms import FormError, read_form
from hublink.web.i18n import N_
from hublink.web.keys import FORM_KEY, HOSTS_KEY, RENDERER_KEY, SESSION_KEY, SESSIONS_KEY
from hublink.web.sessions import COOKIE, Session

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Paths served before the code is entered: the code form and what it needs.
OPEN_PATHS = frozenset({"/", "/unlock"})
STATIC_PREFIX = "/static/"
#: The CSRF token's form field.
CSRF_FIELD = "csrf_token"

FOREIGN_ORIGIN = N_("This request did not come from this page. Open the page again and retry.")
STALE_FORM = N_("This form has expired. Reload the page and try again.")

#: No inline script or style, nothing from elsewhere, never framed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)


def allowed_host_names(hostname: str | None = None) -> frozenset[str]:
    """The domain names the page answers to: localhost and this box's name."""
    name = (hostname or socket.gethostname()).lower().rstrip(".")
    short = name.split(".")[0]
    return frozenset({"localhost", name, short, f"{short}.local"})


def host_allowed(host_header: str | None, names: frozenset[str]) -> bool:
    """Whether a ``Host`` header names this box: an IP literal or one of ``names``."""
    if not host_header:
        return False
    try:
        host = URL(f"http://{host_header}").raw_host
    except ValueError:
        return False
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".") in names
    return True


@web.middleware
async def catch_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected error becomes a plain page and a log line, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        # Logged without the request: its body may hold the password.
        log.exception("page request failed", method=request.method, path=request.path)
        return web.Response(status=500, text="hublink: internal error; see the log\n")


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a ``Host`` naming another domain: DNS rebinding would reach us through it."""
    if not host_allowed(request.headers.get("Host"), request.app[HOSTS_KEY]):
        return web.Response(status=421, text="hublink: unknown host name; use the box's IP\n")
    return await handler(request)


@web.middleware
async def attach_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the visitor's session, or start a locked one and set its cookie."""
    sessions = request.app[SESSIONS_KEY]
    session = sessions.get(request.cookies.get(COOKIE))
    fresh = session is None
    if session is None:
        session = sessions.new_locked()
    request[SESSION_KEY] = session
    response = await handler(request)
    current: Session = request[SESSION_KEY]
    if fresh or current is not session:
        set_cookie(response, current)
    return response


def set_cookie(response: web.StreamResponse, session: Session) -> None:
    """Give the browser ``session``'s cookie: script cannot read it, other sites never send it."""
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/")


@web.middleware
async def require_unlock(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Until the code is entered, serve the code form and nothing else."""
    session: Session = request[SESSION_KEY]
    if session.unlocked or request.path.startswith(STATIC_PREFIX):
        return await handler(request)
    if request.path in OPEN_PATHS:
        return await handler(request)
    if request.path.startswith("/api/"):
        return web.json_response({"error": "locked: enter the setup code first"}, status=401)
    return request.app[RENDERER_KEY].code_form(request, status=401)


@web.middleware
async def check_post(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A POST needs the page's origin and the session's CSRF token; its form is read here."""
    if request.method != "POST":
        return await handler(request)
    renderer = request.app[RENDERER_KEY]
    if not same_origin(request):
        return renderer.message(request, FOREIGN_ORIGIN, status=403)
    try:
        request[FORM_KEY] = await read_form(request)
    except FormError as err:
        return renderer.message(request, err.message, status=err.status)
    session: Session = request[SESSION_KEY]
    if not session.csrf_ok(request[FORM_KEY].get(CSRF_FIELD)):
        return renderer.message(request, STALE_FORM, status=403)
    return await handler(request)


def same_origin(request: web.Request) -> bool:
    """Whether ``Origin`` (else ``Referer``) is the page itself: same scheme, host and port."""
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if not claimed or claimed == "null":
        return False
    try:
        theirs = URL(claimed)
        ours = URL(f"{request.scheme}://{request.headers.get('Host', '')}")
        return (theirs.scheme, (theirs.host or "").lower(), theirs.port) == (
            ours.scheme,
            (ours.host or "").lower(),
            ours.port,
        )
    except ValueError:
        return False


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every answer, errors included (``on_response_prepare``)."""
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: under no-referrer chromium sends "Origin: null"
    # (and no Referer) with the page's own plain form posts, which the Origin check
    # must refuse. Other sites still get nothing, and the code never stays in a URL.
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.path.startswith(STATIC_PREFIX):
        headers["Cache-Control"] = "no-cache"
    else:
        headers["Cache-Control"] = "no-store"


#: Outermost first.
MIDDLEWARES = (catch_errors, check_host, attach_session, require_unlock, check_post)
