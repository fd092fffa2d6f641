"""Reading and checking the page's forms; bad input becomes a message, never a 500.

Forms arrive URL-encoded (a plain form post, or ``fetch`` with
``URLSearchParams``). The body is bounded, must be UTF-8 once decoded, and
each field has a length limit and refuses control characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import SecretStr

from hublink.web.actions import Registration
from hublink.web.i18n import N_

#: The largest form body read, in bytes; a setup form is well under 4 KiB.
MAX_BODY = 16 * 1024
#: Fields read at most; the forms have five.
MAX_FIELDS = 16
#: Each field's longest value, in characters.
LIMITS = {"email": 254, "password": 1024, "name": 100, "address": 300, "code": 128}
_FORM_TYPE = "application/x-www-form-urlencoded"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class FormError(Exception):
    """The request's body cannot be read as a form; ``message`` is a catalog msgid."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field: a catalog msgid and the limit it names, if any."""

    message: str
    limit: int | None = None


@dataclass
class SetupForm:
    """The setup form's fields; the password is held apart and never shown again."""

    email: str = ""
    name: str = ""
    address: str = ""
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    problems: dict[str, Problem] = field(default_factory=dict)

    def registration(self) -> Registration:
        """The registration to ask for; only called when there are no problems."""
        return Registration(self.email, self.password, self.name, self.address)


async def read_form(request: web.Request) -> dict[str, str]:
    """The URL-encoded fields of ``request``; the first value of each name.

    Raises:
        FormError: wrong content type, too large, not UTF-8, or malformed.
    """
    if request.content_type != _FORM_TYPE:
        raise FormError(N_("The form was sent in a format this page does not read."), 415)
    if (request.content_length or 0) > MAX_BODY:
        raise FormError(N_("The form is too large."), 413)
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise FormError(N_("The form is too large."), 413)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError as err:
        raise FormError(N_("The form's text is not valid UTF-8.")) from err
    except ValueError as err:
        raise FormError(N_("The form has too many fields.")) from err
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def check_text(value: str | None, name: str, *, required: bool) -> Problem | None:
    """What is wrong with one field's value, or None."""
    if value is None or not value.strip():
        return Problem(N_("Please fill in this field.")) if required else None
    if len(value) > LIMITS[name]:
        return Problem(N_("This is too long: at most %(limit)s characters."), LIMITS[name])
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return Problem(N_("This contains control characters; please type it again."))
    return None


def setup_form(fields: dict[str, str]) -> SetupForm:
    """The setup form from its fields, each checked."""
    form = SetupForm(
        email=_keepable(fields.get("email", "")).strip(),
        name=_keepable(fields.get("name", "")).strip(),
        address=_keepable(fields.get("address", "")).strip(),
        password=SecretStr(fields.get("password", "")),
    )
    for name, required in (("email", True), ("password", True), ("name", True), ("address", False)):
        problem = check_text(fields.get(name), name, required=required)
        if problem is not None:
            form.problems[name] = problem
    if "email" not in form.problems and not _EMAIL.match(form.email):
        form.problems["email"] = Problem(N_("This does not look like an email address."))
    return form


def _keepable(value: str) -> str:
    """``value`` fit to put back in the form: bounded, without control characters."""
    value = value[: max(LIMITS.values())]
    return "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cs"))
