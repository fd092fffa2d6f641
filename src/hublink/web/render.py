"""Pages rendered with Jinja2 (autoescaped) in the visitor's language."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from hublink.web.i18n import LANGUAGES, choose_language, translations
from hublink.web.keys import LANGUAGE_KEY, SESSION_KEY
from hublink.web.sessions import Session


def _environment(language: str) -> Environment:
    # One environment per language: installing translations per request on a
    # shared one would mix languages between concurrent requests.
    env = Environment(
        loader=PackageLoader("hublink.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


class Renderer:
    """Renders the page's templates for a request, in its language."""

    def __init__(self, forced_language: str | None = None) -> None:
        self.forced_language = forced_language
        self._envs = {language: _environment(language) for language in LANGUAGES}

    def language(self, request: web.Request) -> str:
        """The request's language: ``web.language`` if set, else ``Accept-Language``."""
        if LANGUAGE_KEY not in request:
            request[LANGUAGE_KEY] = choose_language(
                request.headers.get("Accept-Language"), self.forced_language
            )
        language: str = request[LANGUAGE_KEY]
        return language

    def gettext(self, request: web.Request, message: str, **params: Any) -> str:
        """``message`` translated for the request, ``%(name)s`` filled from ``params``."""
        text = translations(self.language(request)).gettext(message)
        return text % params if params else text

    def render(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        """The page ``template`` as an HTML response."""
        language = self.language(request)
        session: Session = request[SESSION_KEY]
        html = (
            self._envs[language]
            .get_template(template)
            .render(lang=language, csrf=session.csrf, session=session, **context)
        )
        response = web.Response(status=status, text=html, content_type="text/html")
        response.headers["Content-Language"] = language
        return response

    def code_form(
        self,
        request: web.Request,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
    ) -> web.Response:
        """The code form, with an error (a catalog msgid) when the last try failed."""
        response = self.render(
            request, "code.html", status=status, error=error, retry_after=retry_after
        )
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def message(self, request: web.Request, message: str, *, status: int) -> web.Response:
        """A short page (or JSON, for script callers) saying why a request was refused."""
        if wants_json(request):
            text = self.gettext(request, message)
            return web.json_response({"ok": False, "message": text}, status=status)
        return self.render(request, "message.html", status=status, message=message)


def wants_json(request: web.Request) -> bool:
    """Whether the caller is the page's script, which asks for JSON."""
    return "application/json" in request.headers.get("Accept", "")
