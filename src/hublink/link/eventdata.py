"""An event's data as the Hub application gives it: JSON text parsed strictly, and
what JSON cannot carry faithfully (contract section 8).

What the Cloud gets must be JSON any parser reads back the same: NaN or
Infinity, a number beyond Python's 4300-digit limit, a lone UTF-16 surrogate or
nesting deeper than the decoder's recursion limit is refused with
:class:`~hublink.errors.InvalidEvent` (exit 2, HTTP 422).

Standard library only: ``hublink send`` parses its ``--data`` here before it
hands the event to a running daemon, without loading the message models.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hublink.errors import InvalidEvent

#: Types the Hub application may queue (contract section 5, ``send``; section 8,
#: ``POST /v1/events``). The message models define them
#: (:data:`hublink.link.messages.APP_EVENT_TYPES`, which a test holds equal to
#: this); the CLI checks ``send TYPE`` against this copy without loading pydantic.
APP_EVENT_TYPES = ("user_sync", "plugin_installed")


def loads_event_data(text: str, *, source: str = "the event data") -> Any:
    """Parse the JSON text of an event's data strictly; the Python value.

    ``source`` names the text in the error (``--data @users.json``).

    Raises:
        InvalidEvent: not JSON; NaN, Infinity or a number that only fits as
            infinity; an integer over Python's digit limit; nesting too deep.
            ``problems`` holds one line saying which.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        problem = f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
    except RecursionError:
        problem = "not valid JSON for hublink: arrays or objects nested too deeply"
    except ValueError as err:
        # int() refuses more than sys.get_int_max_str_digits() digits (4300), and
        # the hooks below refuse what is not a finite number.
        problem = f"not valid JSON for hublink: {str(err).partition('; use ')[0]}"
    raise InvalidEvent(f"{source} is {problem}", problems=[f"data: {problem}"])


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}{'…' if len(text) > 20 else ''} is out of range")
    return value


def unsendable(data: object) -> str | None:
    """Why ``data`` cannot go to the Cloud as faithful JSON, or None when it can.

    Walks the value without recursion (a deep structure must not crash the
    check that exists to refuse it): floats must be finite, strings (keys
    included) must be Unicode text without lone surrogates.
    """
    stack: list[tuple[str, object]] = [("data", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            return f"{where}: {name} is not a JSON number (a number too big to hold is one too)"
        if isinstance(value, str) and not _is_unicode(value):
            return f"{where}: holds a lone UTF-16 surrogate, which is not Unicode text"
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not _is_unicode(key):
                    return f"{where}: a key holds a lone UTF-16 surrogate"
                stack.append((f"{where}.{key}", item))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
