"""Make any string JSON can carry safe to show and to encode.

JSON can carry lone surrogates (``"\\ud800"``), which UTF-8 cannot encode:
a page holding one would fail to render. Control and bidirectional-override
characters could also disguise what the Cloud sent. Escaping for HTML is
Jinja's job (autoescape); this module only repairs the characters.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Shown instead of a character that cannot or should not be shown.
REPLACEMENT = "\ufffd"
#: Lone surrogates, C0/C1 controls (not tab/newline), bidi overrides and isolates.
_UNSHOWABLE = re.compile("[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: A string longer than this is cut: the page shows summaries, not dumps.
MAX_TEXT = 2000


def repair(text: str) -> str:
    """``text`` with unshowable characters replaced and its length bounded."""
    if _SURROGATE.search(text):
        # A pair split in two code points (as a UTF-16 source leaves it) is one
        # character; through UTF-16 it joins again, and only lone halves remain.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "…"
    return _UNSHOWABLE.sub(REPLACEMENT, text)


def repair_tree(value: Any) -> Any:
    """``value`` (decoded JSON) with every string in it, keys included, repaired."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, dict):
        return {repair(str(key)): repair_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [repair_tree(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON
    if value is None or isinstance(value, bool | int | float):
        return value
    return repair(str(value))
