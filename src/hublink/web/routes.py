"""The page's handlers, each with its route: code form, setup form, status view, actions, API."""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from aiohttp import web

from hublink.errors import (
    AlreadyRegisteredError,
    CloudAuthError,
    CloudError,
    CloudUnreachableError,
    ConfigError,
    HublinkError,
    UsageError,
)
from hublink.web.forms import LIMITS, SetupForm, check_text, setup_form
from hublink.web.i18n import N_
from hublink.web.keys import (
    ACTIONS_KEY,
    CODE_KEY,
    CODE_LIMITER_KEY,
    FORM_KEY,
    PASSWORD_LIMITER_KEY,
    RENDERER_KEY,
    SESSION_KEY,
    SESSIONS_KEY,
)
from hublink.web.render import wants_json
from hublink.web.sessions import Session
from hublink.web.text import repair
from hublink.web.view import safe_status, status_view

log = structlog.get_logger(__name__)

#: Every route of the page but the static files, each declared on its handler.
ROUTES = web.RouteTableDef()

WRONG_CODE = N_("That code is not right. It is in the file web-code in hublink's state folder.")
TOO_MANY = N_("Too many tries. Wait %(seconds)s seconds and try again.")
WRONG_PASSWORD = N_("The Cloud did not accept this email and password.")
UNREACHABLE = N_("The Cloud could not be reached. Check the internet connection and try again.")
REFUSED = N_("The Cloud refused the registration.")
ALREADY = N_("This hub is registered already.")
BAD_FIELD = N_("Some fields need another look.")
FAILED = N_("The registration failed.")
REGISTERED = N_("The hub is registered. The link starts now.")
BACKUP_STARTED = N_("Backup started.")
BACKUP_RUNNING = N_("A backup is running already.")
INSTALL_STARTED = N_("Installing the update for %(plugin)s.")
NO_SUCH_UPDATE = N_("There is no update recorded for %(plugin)s.")
NO_INSTALL_HOOK = N_("Installing updates from this page is not set up.")
DAEMON_FAILED = N_("hublink could not do that: %(error)s")


@ROUTES.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    """The code (``?code=``), the code form, the setup form or the status view."""
    code = request.query.get("code")
    if code is not None:
        return _try_code(request, code)
    session: Session = request[SESSION_KEY]
    if not session.unlocked:
        return request.app[RENDERER_KEY].code_form(request)
    status = safe_status(await request.app[ACTIONS_KEY].status())
    if status.get("registered") is not True:
        return _setup_page(request, SetupForm())
    return _status_page(request, status)


@ROUTES.post("/unlock")
async def unlock(request: web.Request) -> web.StreamResponse:
    """The code form."""
    return _try_code(request, request[FORM_KEY].get("code", ""))


def _try_code(request: web.Request, code: str) -> web.StreamResponse:
    renderer = request.app[RENDERER_KEY]
    limiter = request.app[CODE_LIMITER_KEY]
    client = request.remote or "unknown"
    wait = limiter.retry_after(client)
    if wait:
        error = renderer.gettext(request, TOO_MANY, seconds=wait)
        return renderer.code_form(request, status=429, error=error, retry_after=wait)
    expected = request.app[CODE_KEY]
    given = code.strip()[: LIMITS["code"]].encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given, expected.encode()):
        limiter.failed(client)
        log.warning("wrong setup code entered on the page", client=client)
        return renderer.code_form(request, status=401, error=renderer.gettext(request, WRONG_CODE))
    request[SESSION_KEY] = request.app[SESSIONS_KEY].unlock(request[SESSION_KEY])
    log.info("page unlocked", client=client)
    # Redirected so the code leaves the address bar and the history.
    return see_other()


@ROUTES.post("/setup")
async def setup(request: web.Request) -> web.StreamResponse:
    """Register the hub, or the form again with what went wrong."""
    limiter = request.app[PASSWORD_LIMITER_KEY]
    client = request.remote or "unknown"
    form = setup_form(request[FORM_KEY])
    renderer = request.app[RENDERER_KEY]
    wait = limiter.retry_after(client)
    if wait:
        error = renderer.gettext(request, TOO_MANY, seconds=wait)
        response = _setup_page(request, form, error=error, status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    if form.problems:
        return _setup_page(request, form, error=renderer.gettext(request, BAD_FIELD), status=400)
    try:
        await request.app[ACTIONS_KEY].register(form.registration())
    except HublinkError as err:
        if isinstance(err, CloudAuthError):
            limiter.failed(client)
        return _refused(request, form, err)
    log.info("hub registered from the page", client=client)
    request[SESSION_KEY].notice = renderer.gettext(request, REGISTERED)
    return see_other()


def see_other(location: str = "/") -> web.Response:
    """A 303 to ``location``: after a form post the browser fetches the page anew."""
    return web.Response(status=303, headers={"Location": location})


#: How each registration failure is worded, most specific first: message,
#: HTTP status (as the control API's POST /v1/register), whether to show the
#: error's own text (the Cloud's words; not for the cases worded completely).
_REFUSALS: tuple[tuple[type[HublinkError], str, int, bool], ...] = (
    (CloudAuthError, WRONG_PASSWORD, 401, False),
    (CloudUnreachableError, UNREACHABLE, 502, False),
    (AlreadyRegisteredError, ALREADY, 409, False),
    (UsageError, BAD_FIELD, 422, True),
    (ConfigError, FAILED, 422, True),
    (CloudError, REFUSED, 502, True),
    (HublinkError, FAILED, 502, True),
)


def _refused(request: web.Request, form: SetupForm, err: HublinkError) -> web.Response:
    """The setup form again, saying in plain words why the registration failed."""
    message, status, show = next(
        (words, code, show) for kind, words, code, show in _REFUSALS if isinstance(err, kind)
    )
    detail = repair(err.message) if show else ""
    password = form.password.get_secret_value()
    if password and password in detail:
        detail = ""  # a message quoting the password must not carry it back
    text = request.app[RENDERER_KEY].gettext(request, message)
    return _setup_page(request, form, error=text, detail=detail or None, status=status)


@ROUTES.post("/backup")
async def backup(request: web.Request) -> web.StreamResponse:
    """The **Back up now** button."""
    try:
        started = await request.app[ACTIONS_KEY].backup()
    except HublinkError as err:
        return _answer(request, DAEMON_FAILED, ok=False, status=502, error=repair(err.message))
    if started:
        return _answer(request, BACKUP_STARTED, ok=True, status=202)
    return _answer(request, BACKUP_RUNNING, ok=False, status=409)


@ROUTES.post("/updates/{plugin_id}/install")
async def install(request: web.Request) -> web.StreamResponse:
    """An **Install** button."""
    actions = request.app[ACTIONS_KEY]
    plugin = request.match_info["plugin_id"]
    if not actions.install_hook_configured:
        return _answer(request, NO_INSTALL_HOOK, ok=False, status=404)
    if check_text(plugin, "name", required=True) is not None:
        return _answer(request, NO_SUCH_UPDATE, ok=False, status=404, plugin=repair(plugin))
    try:
        started = await actions.install_update(plugin)
    except HublinkError as err:
        return _answer(request, DAEMON_FAILED, ok=False, status=502, error=repair(err.message))
    message = INSTALL_STARTED if started else NO_SUCH_UPDATE
    return _answer(request, message, ok=started, status=202 if started else 404, plugin=plugin)


@ROUTES.post("/checks")
async def checks(request: web.Request) -> web.StreamResponse:
    """The **Run checks** button; the results show on the status view."""
    try:
        report = safe_status(await request.app[ACTIONS_KEY].doctor())
    except HublinkError as err:
        return _answer(request, DAEMON_FAILED, ok=False, status=502, error=repair(err.message))
    if wants_json(request):
        return web.json_response(report)
    request[SESSION_KEY].doctor = report
    return see_other()


@ROUTES.get("/api/status")
async def api_status(request: web.Request) -> web.StreamResponse:
    """The ``status --json`` object (only once unlocked)."""
    return web.json_response(safe_status(await request.app[ACTIONS_KEY].status()))


def _answer(
    request: web.Request, message: str, *, ok: bool, status: int, **params: Any
) -> web.StreamResponse:
    """JSON for the page's script; for a plain form post, a notice on the next page."""
    text = request.app[RENDERER_KEY].gettext(request, message, **params)
    if wants_json(request):
        return web.json_response({"ok": ok, "message": text}, status=status)
    session: Session = request[SESSION_KEY]
    session.notice, session.notice_error = text, not ok
    return see_other()


def _setup_page(
    request: web.Request,
    form: SetupForm,
    *,
    error: str | None = None,
    detail: str | None = None,
    status: int = 200,
) -> web.Response:
    return request.app[RENDERER_KEY].render(
        request, "setup.html", status=status, form=form, error=error, detail=detail
    )


def _status_page(request: web.Request, status: dict[str, Any]) -> web.Response:
    session: Session = request[SESSION_KEY]
    notice, notice_error = session.notice, session.notice_error
    doctor, session.notice, session.doctor = session.doctor, None, None
    return request.app[RENDERER_KEY].render(
        request,
        "status.html",
        view=status_view(status),
        install_enabled=request.app[ACTIONS_KEY].install_hook_configured,
        notice=notice,
        notice_error=notice_error,
        doctor=doctor,
    )
