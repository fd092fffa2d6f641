"""Logging: structlog to stderr, rendered for a terminal, for JSON, or for journald.

Every event passes through :func:`mask_secrets` before it is rendered, so a
token, a password or a JWT never reaches a log line, whatever the code that
logged it put in the event; then through :func:`bound_text`, so that text the
Cloud controls (a revocation's reason, a frame's excerpt, an error body) can
neither make a line a megabyte long nor break the renderer with a string that
is not valid Unicode.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr

from hublink.logbatch import BatchedLoggerFactory
from hublink.logbudget import LineBudget, budgeted
from hublink.untrusted import clip, printable

MASK = "***"
#: The longest a logged value may be, in characters (a hook's stderr excerpt fits).
LOG_VALUE_CHARS = 2100
#: The longest a logged traceback may be: long enough for any of hublink's own.
LOG_EXCEPTION_CHARS = 20_000

#: Event keys whose values are always secret.
SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "tunnel_token",
        "server_token",
        "access",
        "refresh",
        "authorization",
        "secret",
        "jwt",
        "webserver_password",
    }
)

_PATTERNS = (
    # token=… and password=… in URLs and query strings.
    (re.compile(r"((?:token|password|secret)=)[^&\s'\"]+", re.IGNORECASE), rf"\1{MASK}"),
    # Authorization: Bearer …, Basic …
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {MASK}"),
    # Anything shaped like a JWT.
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # "password": "…" and token = "…" inside JSON or TOML text.
    (
        re.compile(
            r"""(["']?(?:password|tunnel_token|token|access|refresh|metadatas\.token|"""
            r"""auth\.token)["']?\s*[:=]\s*)["'][^"']*["']""",
            re.IGNORECASE,
        ),
        rf'\1"{MASK}"',
    ),
)

_ANCHORS = r"[=:]|eyJ|(?i:bearer|basic)"


class _Secrets:
    """The registered secret values, and one scan that finds what masking might change.

    Each pattern above needs a ``=`` or ``:``, an ``eyJ``, or the word Bearer or
    Basic, and a registered secret needs itself. Most log values (ids, versions,
    event names) hold none of these, and the scan is all they cost; a value with
    a hit goes through the full, ordered masking of :func:`mask_text`, so what is
    masked is exactly what the step-by-step substitutions mask.
    """

    def __init__(self) -> None:
        self.values: set[str] = set()
        self._suspect: re.Pattern[str] | None = None

    @property
    def suspect(self) -> re.Pattern[str]:
        """The scan: the anchors, or any registered secret."""
        # Compiled at the first use after a change, not at every change: a process
        # that runs many links registers a token for each, and recompiling a growing
        # alternation at every one cost a minute for a thousand (the reconnect storm).
        if self._suspect is None:
            alternatives = [_ANCHORS, *(re.escape(value) for value in self.values)]
            self._suspect = re.compile("|".join(alternatives))
        return self._suspect

    def add(self, value: str) -> None:
        if value not in self.values:
            self.values.add(value)
            self._suspect = None

    def discard(self, value: str) -> None:
        if value in self.values:
            self.values.discard(value)
            self._suspect = None


_secrets = _Secrets()

SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def register_secret(value: str | None) -> None:
    """Mask every later occurrence of ``value`` in any log event."""
    if value and len(value) >= 6:
        _secrets.add(value)


def forget_secret(value: str | None) -> None:
    """Stop masking ``value``: a one-time secret (frpc's admin password) that is gone."""
    _secrets.discard(value or "")


def register_secret_str(value: SecretStr | None) -> None:
    """:func:`register_secret` for a setting such as ``tunnel.server_token`` (None: nothing)."""
    if value is not None:
        register_secret(value.get_secret_value())


def mask_text(text: str) -> str:
    """``text`` with known secrets and secret-shaped substrings replaced by ``***``."""
    if _secrets.suspect.search(text) is None:
        return text
    for secret in _secrets.values:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _mask_value(key: str | None, value: Any) -> Any:
    if key is not None and key.lower() in SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(None, v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return mask_text(str(value))


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets anywhere in the event."""
    for key, value in event_dict.items():
        if type(value) is str:
            # The common case, inlined: a plain text under an ordinary key.
            if key != "event" and key.lower() in SECRET_KEYS:
                event_dict[key] = MASK
            elif _secrets.suspect.search(value) is not None:
                event_dict[key] = mask_text(value)
            continue
        event_dict[key] = _mask_value(key if key != "event" else None, value)
    return event_dict


def bound_text(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: cut every long text, escape lone surrogates (after the masking)."""
    for key, value in event_dict.items():
        if type(value) is str:
            # The common case, inlined: short ASCII passes with two cheap checks.
            if len(value) > LOG_VALUE_CHARS or not value.isascii():
                limit = LOG_EXCEPTION_CHARS if key == "exception" else LOG_VALUE_CHARS
                event_dict[key] = printable(clip(value, limit))
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _bound_value(value)
    return event_dict


def _bound_value(value: Any) -> Any:
    if isinstance(value, str):
        return printable(clip(value, LOG_VALUE_CHARS))
    if isinstance(value, dict):
        return {_bound_value(str(k)): _bound_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bound_value(v) for v in value]
    return value


def journal_renderer(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
    """``<N>event key=value …``: journald reads the priority, adds the time itself."""
    level = str(event_dict.pop("level", method))
    event = str(event_dict.pop("event", ""))
    exception = event_dict.pop("exception", None)
    fields = " ".join(f"{key}={_kv(value)}" for key, value in event_dict.items())
    priority = SYSLOG_PRIORITY.get(level, 6)
    line = f"<{priority}>{event}" + (f" {fields}" if fields else "")
    if exception:
        # One journal entry per line; keep the traceback readable, one entry.
        line += " exception=" + _kv(str(exception).replace("\n", " | "))
    return line


_NEEDS_QUOTES = re.compile('[ "=\n]')


def _kv(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def stream_is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to journald (``$JOURNAL_STREAM`` = dev:inode)."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def pick_format(requested: str, stream: TextIO) -> str:
    """Resolve ``auto`` to ``journal``, ``console`` or ``json`` for ``stream``."""
    if requested != "auto":
        return requested
    if stream_is_journal(stream):
        return "journal"
    if stream.isatty():
        return "console"
    return "json"


class _HubField:
    """The ``hub_id`` every log line carries, from the credentials in force now.

    One process-wide value rather than a bound context variable: tasks copy
    their context when they start, so a value bound before a re-registration
    would stay on every line of the tasks already running.
    """

    hub_id: str | None = None

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if self.hub_id is not None:
            event.setdefault("hub_id", self.hub_id)
        return event


_hub_field = _HubField()


def set_hub_id(hub_id: str | None) -> None:
    """Make every later log line of this process carry ``hub_id`` (None: no hub)."""
    _hub_field.hub_id = hub_id


def configure(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, *, daemon: bool = False
) -> str:
    """Set up structlog and route the standard library's loggers through it.

    ``daemon``: the daemon's logging, whose receive loop logs a line a Cloud
    message: at most a budget of lines per event a second
    (:mod:`hublink.logbudget`), the lines of one event-loop step in one write
    (:mod:`hublink.logbatch`), loggers cached (it configures only once).
    Returns the format actually used.
    """
    stream = stream or sys.stderr
    chosen = pick_format(fmt, stream)
    # The level and the time are added after the masking: they are the
    # pipeline's own values (overwriting any a caller passed), not worth a scan.
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _hub_field,
        structlog.processors.format_exc_info,
        mask_secrets,
        bound_text,
        structlog.processors.add_log_level,
    ]
    if chosen != "journal":
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    processors.append(_renderer(chosen))
    wrapper = structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])
    structlog.configure(
        processors=processors,
        # The budget before the processors: a line past it costs none of them.
        wrapper_class=budgeted(wrapper, LineBudget()) if daemon else wrapper,
        logger_factory=(
            BatchedLoggerFactory(stream) if daemon else structlog.PrintLoggerFactory(file=stream)
        ),
        # The daemon configures once: each module's logger is built at its first
        # line instead of at every line. The CLI and the tests configure again.
        cache_logger_on_first_use=daemon,
    )
    _route_stdlib(level)
    return chosen


def _renderer(chosen: str) -> Any:
    if chosen == "journal":
        return journal_renderer
    if chosen == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer()


class _ToStructlog(logging.Handler):
    """Hands records of libraries (websockets, aiohttp, asyncio) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger(record.name)
        method = record.levelname.lower()
        if method not in SYSLOG_PRIORITY:
            method = "info"
        kwargs: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            kwargs["exc_info"] = record.exc_info
        getattr(log, method)(record.getMessage(), **kwargs)


def _route_stdlib(level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToStructlog):
            root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    # Libraries chatter at info; only their warnings matter to an operator.
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def secrets_in(values: Iterable[str], text: str) -> list[str]:
    """Which of ``values`` appear in ``text`` (for tests and self-checks)."""
    return [v for v in values if v and v in text]
