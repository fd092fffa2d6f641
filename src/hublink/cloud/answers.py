"""What the Cloud answers (contract section 1), and how hublink reads it.

    User, Tokens, Refreshed, PublicKey, Registration   pydantic models of the answers
    Reply                      one HTTP answer, read in full
    parse_reply(reply, Model)  a 2xx answer validated, or CloudResponseError
    raise_for_reply(reply)     CloudResponseError with the Cloud's words unless 2xx
    describe_error_body(...)   the useful part of an error body, secrets masked

Every answer is validated by a pydantic model: strict about what hublink
needs, blind to fields it does not know. The Cloud's own words are shown,
secrets never are.
"""

from __future__ import annotations

import html
import json as jsonlib
import re
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from multidict import CIMultiDictProxy
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from hublink.errors import CloudResponseError
from hublink.logs import mask_text

#: How much of the Cloud's error text a message shows.
MAX_SHOWN = 300

_M = TypeVar("_M", bound=BaseModel)


class _Answer(BaseModel):
    """A Cloud answer: unknown fields are ignored, nothing is written back."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Answer):
    """The owner, as login describes them (optional: SimpleJWT omits it)."""

    id: int | str | None = None
    email: str | None = None


class Tokens(_Answer):
    """The owner's JWTs: in memory only, for the few seconds enrollment takes."""

    access: SecretStr = Field(min_length=1)
    refresh: SecretStr = Field(min_length=1)
    user: User | None = None

    @field_validator("user", mode="before")
    @classmethod
    def _ignore_odd_user(cls, value: Any) -> Any:
        # hublink never needs the user; an odd shape is no reason to fail.
        return value if isinstance(value, dict) else None


class Refreshed(_Answer):
    """What ``refresh`` answers: a new access token, a new refresh token if rotated."""

    access: SecretStr = Field(min_length=1)
    refresh: SecretStr | None = None  # absent unless the Cloud rotates refresh tokens


class PublicKey(_Answer):
    """The key that signs the Cloud's access tokens."""

    public_key: StrictStr = Field(min_length=1)
    algorithm: StrictStr = "RS256"


class Registration(_Answer):
    """What ``register`` gives the hub: its identity and tunnel credential."""

    hub_id: UUID
    slug: StrictStr = Field(min_length=1, max_length=200)
    tunnel_port: StrictInt = Field(ge=1, le=65535)
    tunnel_token: SecretStr = Field(min_length=1)


#: Fields whose values never appear in a message, even when they are wrong.
_SECRET_FIELDS = frozenset({"access", "refresh", "tunnel_token", "password"})


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full (REST answers are small)."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status <= 299

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def error_message(self) -> str:
        """The useful part of an error body: ``detail``, field errors, or an HTML title."""
        return describe_error_body(self.content_type, self.body)


# --- reading answers -----------------------------------------------------------


def raise_for_reply(reply: Reply, *, what: str) -> None:
    """Raise :class:`CloudResponseError` with the Cloud's own words unless ``reply`` is 2xx."""
    if reply.ok:
        return
    if 300 <= reply.status <= 399:
        target = reply.headers.get("Location", "somewhere else")
        raise CloudResponseError(
            f"could not {what}: the Cloud redirected to {target} (HTTP {reply.status})",
            hint="set cloud_url to the Cloud's real address (https://, no path)",
            status=reply.status,
        )
    message = reply.error_message()
    raise CloudResponseError(
        f"could not {what}: the Cloud answered HTTP {reply.status} {reply.reason}"
        + (f": {message}" if message else ""),
        hint="the message above is the Cloud's; fix what it names and try again",
        status=reply.status,
    )


def parse_reply(reply: Reply, model: type[_M], *, what: str) -> _M:
    """Validate a 2xx answer into ``model``, or raise a clear :class:`CloudResponseError`."""
    raise_for_reply(reply, what=what)
    hint = (
        "nothing was saved; a proxy or captive portal may be answering for the Cloud, "
        "or the Cloud runs an incompatible version: check cloud_url"
    )
    try:
        data = jsonlib.loads(reply.body)
    except ValueError:
        if _looks_like_html(reply.content_type, reply.body):
            shown = _html_message(reply.body.decode("utf-8", "replace"))
            found = f"an HTML page ({shown})" if shown else "an HTML page"
        else:
            found = f"a body that is not JSON (Content-Type {reply.content_type or 'missing'})"
        raise CloudResponseError(
            f"could not {what}: the Cloud answered HTTP {reply.status} with {found}",
            hint=hint,
            status=reply.status,
        ) from None
    if not isinstance(data, dict):
        raise CloudResponseError(
            f"could not {what}: the Cloud answered a JSON {type(data).__name__}, not an object",
            hint=hint,
            status=reply.status,
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise CloudResponseError(
            f"could not {what}: the Cloud's answer lacks what hublink needs:\n"
            + describe_answer_error(err),
            hint=hint,
            status=reply.status,
        ) from None


def describe_answer_error(err: ValidationError) -> str:
    """One line per bad field; the values of secret fields are never shown."""
    lines = []
    for problem in err.errors(include_url=False):
        loc = ".".join(str(part) for part in problem["loc"]) or "(answer)"
        if problem["type"] == "missing":
            lines.append(f"  {loc}: missing")
            continue
        if any(str(part) in _SECRET_FIELDS for part in problem["loc"]):
            lines.append(f"  {loc}: {problem['msg']}")
            continue
        shown = repr(problem.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        lines.append(f"  {loc} = {mask_text(shown)}: {problem['msg']}")
    return "\n".join(lines)


def describe_error_body(content_type: str, body: bytes) -> str:
    """The useful part of an error body, short and with secrets masked."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if "json" in content_type or text.startswith(("{", "[")):
        try:
            message = _json_message(jsonlib.loads(text))
        except ValueError:
            message = text
    elif _looks_like_html(content_type, body):
        message = _html_message(text)
    else:
        message = text
    return _truncate(mask_text(" ".join(message.split())))


def _json_message(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            if key in data:
                return _json_message(data[key])
        # Django REST Framework's field errors: {"name": ["This field is required."]}
        return "; ".join(f"{key}: {_json_message(value)}" for key, value in data.items())
    if isinstance(data, list):
        return " ".join(_json_message(item) for item in data)
    return str(data)


def _looks_like_html(content_type: str, body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return "html" in content_type or head.startswith((b"<!doctype", b"<html"))


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_H1 = re.compile(r"<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _html_message(text: str) -> str:
    def clean(fragment: str) -> str:
        return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())

    title = _TITLE.search(text)
    heading = _H1.search(text)
    parts = [clean(m.group(1)) for m in (title, heading) if m is not None]
    parts = [p for p in parts if p]
    if len(parts) == 2 and (parts[1] in parts[0] or parts[0] in parts[1]):
        parts = [max(parts, key=len)]
    if parts:
        return _truncate(": ".join(parts))
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", text, flags=re.IGNORECASE | re.DOTALL)
    return _truncate(clean(body))


def _truncate(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
