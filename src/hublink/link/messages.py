"""Every frame of the WebSocket link (contract section 2) as a pydantic model.

Nothing outside this module touches a raw dict from the wire: inbound frames
become models through :func:`parse_inbound`, outbound ones leave as JSON text
through :meth:`OutboundEvent.to_frame` or :func:`heartbeat_frame`.

Be strict about what hublink needs and liberal about the rest: unknown fields
are ignored, numeric ids are accepted as strings, and an event from the Hub
application is checked only as far as the Cloud needs it to be.

    BadFrame                 an inbound frame hublink drops (logged, link stays up)
     └── UnknownMessageType  a well-formed frame whose ``type`` hublink does not know
    InvalidEvent             (a UsageError, exit 2) an event the Hub app asked to queue
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from hublink.clock import iso_z, utc_now
from hublink.errors import InvalidEvent
from hublink.logs import mask_text
from hublink.untrusted import valid_unicode

#: How much of an offending payload a log line may show.
EXCERPT_CHARS = 200

#: The ``backup_failed`` error of a request refused because another backup runs.
BACKUP_ALREADY_RUNNING = "a backup is already running"


class BadFrame(ValueError):
    """An inbound frame that is dropped; ``reason`` is safe to log (masked, truncated)."""

    def __init__(self, reason: str, *, message_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_type = message_type


class UnknownMessageType(BadFrame):
    """A frame with a string ``type`` hublink does not handle (logged at warning)."""


def _id_to_str(value: Any) -> Any:
    # The Cloud is Django: user and plugin ids may arrive as integers.
    # bool is an int subclass but never an id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_email(value: str) -> str:
    # Deliberately loose: the Cloud validates addresses, hublink only refuses nonsense.
    if "@" not in value:
        raise ValueError("must be an email address (contain @)")
    return value


#: A non-empty identifier; integers are accepted and turned into strings.
Ident = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    BeforeValidator(_id_to_str),
]
Text = Annotated[str, StringConstraints(min_length=1)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=320),
    AfterValidator(_check_email),
]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- Hub → Cloud ------------------------------------------------------------


class _Outbound(_Wire):
    def to_frame(self) -> str:
        """The JSON text sent on the link."""
        return self.model_dump_json()


class Heartbeat(_Outbound):
    """``heartbeat``: proof of life, right after connecting and then periodically."""

    type: Literal["heartbeat"] = "heartbeat"
    timestamp: str


class SyncedUser(_Wire):
    """One user in a ``user_sync`` event."""

    cloud_user_id: Ident
    email: Email
    last_activity: datetime | None = None


class _Event(_Outbound):
    # Every queued event carries an id so the Cloud can drop the duplicates
    # that at-least-once delivery produces.
    id: UUID = Field(default_factory=uuid4)


class _AppEvent(_Event):
    # What the Hub application queued, as it wrote it: validated, never rewritten.
    _sent_as: dict[str, Any] | None = PrivateAttr(default=None)

    def to_frame(self) -> str:
        """The Hub's own JSON (its ids, timestamps and extra fields) plus ``type`` and ``id``."""
        if self._sent_as is None:
            return super().to_frame()
        fields = {k: v for k, v in self._sent_as.items() if k not in ("type", "id")}
        event_type = type(self).model_fields["type"].default
        return json.dumps({"type": event_type, **fields, "id": str(self.id)})


class UserSync(_AppEvent):
    """``user_sync``: the Hub's users, queued by the Hub application."""

    type: Literal["user_sync"] = "user_sync"
    users: list[SyncedUser]


class PluginInstalled(_AppEvent):
    """``plugin_installed``: a plugin (update) was installed, queued by the Hub application."""

    type: Literal["plugin_installed"] = "plugin_installed"
    plugin_id: Ident
    version: Ident
    installed_at: datetime


class BackupCompleted(_Event):
    """``backup_completed``: the answer to a ``backup_request`` that succeeded."""

    type: Literal["backup_completed"] = "backup_completed"
    backup_id: Ident
    filename: Text
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256Hex
    requested_by: str


class BackupFailed(_Event):
    """``backup_failed``: the answer to a ``backup_request`` that failed."""

    type: Literal["backup_failed"] = "backup_failed"
    error: Text
    requested_by: str


#: An event that waits in the outbox.
OutboundEvent = UserSync | PluginInstalled | BackupCompleted | BackupFailed


def message_type(model: type[BaseModel]) -> str:
    """The wire ``type`` of a message model: the value of its ``type`` Literal."""
    (value,) = get_args(model.model_fields["type"].annotation)
    return str(value)


_APP_EVENTS: dict[str, type[UserSync | PluginInstalled]] = {
    message_type(model): model for model in (UserSync, PluginInstalled)
}
#: Types the Hub application may queue (``hublink send``, ``POST /v1/events``).
APP_EVENT_TYPES = tuple(_APP_EVENTS)


def heartbeat_frame(now: datetime | None = None) -> str:
    """The JSON text of a heartbeat: ``{"type":"heartbeat","timestamp":"…Z"}`` in UTC."""
    # Built by hand: it is sent forever, every 30 s, and needs no validation.
    return f'{{"type":"heartbeat","timestamp":"{iso_z(now or utc_now())}"}}'


def validate_event(event_type: str, data: dict[str, Any]) -> UserSync | PluginInstalled:
    """Turn the Hub application's ``data`` into an event ready for the outbox.

    ``data`` may carry an ``id`` (a UUID) to make a re-send idempotent;
    otherwise a new UUID4 is assigned. A ``type`` inside ``data`` must match.

    Raises:
        InvalidEvent: unknown type, or fields missing or invalid; ``problems``
            lists one readable line per field.
    """
    model = _APP_EVENTS.get(event_type)
    if model is None:
        allowed = ", ".join(APP_EVENT_TYPES)
        raise InvalidEvent(
            f"{event_type!r} is not an event the Hub can send",
            problems=[f"type: must be one of {allowed}"],
            hint=f"use one of: {allowed}",
        )
    if not isinstance(data, dict):
        raise InvalidEvent(
            f"a {event_type} event must be a JSON object",
            problems=[f"(top level): expected an object, got {type(data).__name__}"],
        )
    if data.get("type", event_type) != event_type:
        raise InvalidEvent(
            f"the data says type {data.get('type')!r} but the event is {event_type}",
            problems=["type: does not match the event type"],
        )
    fields = {**data, "type": event_type}
    if fields.get("id") is None:
        # "id": null means "give it one", like no id at all.
        fields.pop("id", None)
    try:
        event = model.model_validate(fields)
    except ValidationError as err:
        problems = describe_problems(err)
        raise InvalidEvent(
            f"invalid {event_type} event:\n" + "\n".join(f"  {p}" for p in problems),
            problems=problems,
            hint=_EVENT_HINTS[event_type],
        ) from None
    event._sent_as = data
    return event


_EVENT_HINTS = {
    "user_sync": 'expected {"users": [{"cloud_user_id", "email", "last_activity"}, …]}',
    "plugin_installed": 'expected {"plugin_id", "version", "installed_at": ISO-8601 time}',
}


def describe_problems(err: ValidationError, *, tag: str | None = None) -> list[str]:
    """One line per problem: dotted field path, what was given (masked, short), what is wrong.

    ``tag``, the union member's name that pydantic puts first in every path, is left out.
    """
    lines = []
    for problem in err.errors(include_url=False):
        parts = list(problem["loc"])
        if tag is not None and parts[:1] == [tag]:
            parts = parts[1:]
        loc = ".".join(str(part) for part in parts) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "missing":
            lines.append(f"{loc}: required")
            continue
        lines.append(f"{loc}: {message} (got {excerpt(repr(problem.get('input')), 60)})")
    return lines


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` with secrets masked, cut to ``limit`` characters."""
    text = mask_text(text)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text


# --- Cloud → Hub ------------------------------------------------------------


class _Inbound(_Wire):
    # Unknown fields are kept, not used: a hook gets the message as the Cloud
    # sent it, including fields newer than this hublink.
    model_config = ConfigDict(frozen=True, extra="allow")
    # The frame's object exactly as received (set by parse_inbound): validation
    # turns an integer id into a string, but the hook must see what the Cloud
    # sent (contract §6). A slot, which pydantic leaves alone, not a private
    # attribute: those cost every message a post-init call (two in a subclass).
    __slots__ = ("_received",)

    def __eq__(self, other: object) -> bool:
        # Two messages with the same fields are equal however they arrived;
        # pydantic would also compare the private copy of the frame.
        if not isinstance(other, _Inbound):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and self.__pydantic_extra__ == other.__pydantic_extra__
        )

    __hash__ = None  # type: ignore[assignment]  # extra fields may hold dicts: unhashable

    def hook_payload(self) -> bytes:
        """The message as JSON for a hook's stdin: as the Cloud sent it, unknown fields too."""
        received = getattr(self, "_received", None)
        if received is not None:
            text = json.dumps(received, ensure_ascii=False, separators=(",", ":"))
            # Lone surrogates are replaced at parse time; should one remain, its JSON
            # escape (what backslashreplace writes) keeps stdin valid UTF-8 and JSON.
            return text.encode("utf-8", "backslashreplace")
        return self.model_dump_json(exclude_unset=True).encode()


class PluginUpdateAvailable(_Inbound):
    """``plugin_update_available``: recorded for ``hublink status``, then the hook runs."""

    type: Literal["plugin_update_available"]
    plugin_id: Ident
    current_version: Ident | None = None
    new_version: Ident
    download_url: Text


class UserRevoked(_Inbound):
    """``user_revoked``: recorded for ``hublink status``, then the hook runs."""

    type: Literal["user_revoked"]
    user_id: Ident
    email: str | None = None
    reason: str | None = None


class BackupRequest(_Inbound):
    """``backup_request``: back up now and answer ``backup_completed`` or ``backup_failed``."""

    type: Literal["backup_request"]
    # Only echoed back: a request without it still deserves a backup and an answer.
    requested_by: Annotated[str, BeforeValidator(_id_to_str)] = ""


InboundMessage = Annotated[
    PluginUpdateAvailable | UserRevoked | BackupRequest, Field(discriminator="type")
]
_INBOUND: TypeAdapter[PluginUpdateAvailable | UserRevoked | BackupRequest] = TypeAdapter(
    InboundMessage
)
#: Cloud→Hub types hublink handles (contract section 2); the rest are logged and ignored.
INBOUND_TYPES = frozenset(
    message_type(model) for model in (PluginUpdateAvailable, UserRevoked, BackupRequest)
)


def parse_inbound(frame: str | bytes) -> PluginUpdateAvailable | UserRevoked | BackupRequest:
    """Validate one frame from the Cloud.

    Raises:
        UnknownMessageType: a JSON object whose string ``type`` hublink does not know.
        BadFrame: binary, not JSON, not an object, no string ``type``, or invalid fields.
    """
    if isinstance(frame, bytes | bytearray | memoryview):
        raise BadFrame(f"binary frame of {len(frame)} bytes; the protocol uses text frames")
    try:
        data = json.loads(frame)
    except json.JSONDecodeError as err:
        raise BadFrame(f"not JSON ({err.msg} at char {err.pos}): {excerpt(frame)!r}") from None
    except RecursionError:
        raise BadFrame(f"JSON nested too deeply: {excerpt(frame)!r}") from None
    except ValueError as err:
        # Valid JSON that Python refuses to hold: an integer of more than
        # sys.get_int_max_str_digits() digits (4300), a guard against slow int().
        raise BadFrame(f"JSON hublink cannot read ({err}): {excerpt(frame)!r}") from None
    if not isinstance(data, dict):
        raise BadFrame(f"not a JSON object but {_json_kind(data)}: {excerpt(frame)!r}")
    if "\\u" in frame:
        # JSON may escape a lone surrogate ("\\ud83d"), which is not text: no UTF-8
        # encoder (a hook's stdin, a page, a terminal) takes it. A text frame holds
        # none otherwise: the WebSocket layer checked its UTF-8.
        data = valid_unicode(data)
    kind = data.get("type")
    if not isinstance(kind, str):
        what = "no 'type' field" if kind is None else f"'type' is {_json_kind(kind)}"
        raise BadFrame(f"{what}: {excerpt(frame)!r}")
    if kind not in INBOUND_TYPES:
        raise UnknownMessageType(
            f"unknown message type {excerpt(kind, 60)!r}", message_type=excerpt(kind, 60)
        )
    try:
        message = _INBOUND.validate_python(data)
    except ValidationError as err:
        problems = "; ".join(describe_problems(err, tag=kind))
        raise BadFrame(f"invalid {kind}: {excerpt(problems, 400)}", message_type=kind) from None
    object.__setattr__(message, "_received", data)  # frozen: set once, here
    return message


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")
