"""Text hublink did not write (the Cloud's, a hook's) made safe to pass on.

    valid_unicode(value)   a parsed JSON value with every lone surrogate replaced by U+FFFD
    printable(text)        ``text`` that encodes as UTF-8 anywhere (lone surrogates escaped)
    clip(text, limit)      ``text`` cut to ``limit`` characters, saying how much was cut

JSON can carry strings that are not Unicode text: ``"\\ud83d"`` is valid JSON
and decodes to a lone surrogate, which no UTF-8 encoder accepts (a hook's
stdin, a terminal, a web page, a log file would all fail on it). And a
string from the Cloud may be a megabyte long. Standard library only: the link
and the logging pipeline use it on every frame and every line.
"""

from __future__ import annotations

import re
from typing import Any

#: A UTF-16 surrogate code point; in a Python str only ever a lone one.
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def valid_unicode(value: Any) -> Any:
    """``value`` (from ``json.loads``) with lone surrogates in keys and strings replaced by U+FFFD.

    Anything else is returned as is; containers are copied only when one of
    their strings changes.
    """
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value) if not value.isascii() else value
    if isinstance(value, list):
        items = [valid_unicode(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        pairs = [(valid_unicode(k), valid_unicode(v)) for k, v in value.items()]
        changed = any(
            a is not k or b is not v for (a, b), (k, v) in zip(pairs, value.items(), strict=True)
        )
        return dict(pairs) if changed else value
    return value


def printable(text: str) -> str:
    """``text`` with each lone surrogate as its ``\\udXXX`` escape: it encodes as UTF-8."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clip(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
