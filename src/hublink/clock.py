"""Time, in one place: the current UTC time, the wire's time format, HTTP dates, clock skew.

    utc_now()                    timezone-aware UTC now
    iso_z(moment)                ``YYYY-MM-DDTHH:MM:SSZ`` (contract section 2), UTC
    parse_http_date(text)        an HTTP ``Date`` / ``Retry-After`` date, or None
    clock_skew(server_date)      the Cloud's clock minus ours, in seconds
    skew_is_too_large(skew)      the one rule: more than MAX_CLOCK_SKEW away
    describe_skew(skew)          "this machine's clock is 7 min behind the Cloud's"
    describe_duration(seconds)   "2 h", "1 min 1 s": how hublink prints a span

Standard library only: the link, the REST client and ``retry`` all import it,
and none of them should pay for anything more.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import overload

#: The most the hub's clock may differ from the Cloud's (contract section 1):
#: the Cloud's JWT leeway; beyond it TLS and login tokens break.
MAX_CLOCK_SKEW = 60.0

#: asctime, the one HTTP date form without a zone: it is GMT by definition (RFC 9110 §5.6.7).
_ASCTIME = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@overload
def iso_z(moment: datetime, *, precise: bool = False) -> str: ...


@overload
def iso_z(moment: None, *, precise: bool = False) -> None: ...


def iso_z(moment: datetime | None, *, precise: bool = False) -> str | None:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``, None as None; ``precise`` keeps microseconds.

    A naive ``moment`` is taken as local time, as :meth:`datetime.astimezone` does.
    """
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    if precise:
        # The status object and the notices keep sub-second order (microseconds
        # when there are any, as isoformat writes them).
        return utc.isoformat().replace("+00:00", "Z")
    return f"{utc:%Y-%m-%dT%H:%M:%SZ}"


def parse_http_date(text: str | None) -> datetime | None:
    """An HTTP date (IMF-fixdate, RFC 850 or asctime) as aware UTC, or None if it is not one."""
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        # email.utils raises any of these for text that only looks like a date.
        return None
    if moment.tzinfo is None:
        if not _ASCTIME.fullmatch(text.strip()):
            return None  # an HTTP date is always GMT; a zone-less one is not one
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def clock_skew(server_date: datetime, *, now: float | None = None) -> float:
    """The Cloud's clock minus this machine's, in seconds (positive: ours is behind)."""
    return server_date.timestamp() - (time.time() if now is None else now)


def skew_is_too_large(skew: float | None) -> bool:
    """Whether ``skew`` (seconds, None when unknown) is beyond :data:`MAX_CLOCK_SKEW`."""
    return skew is not None and abs(skew) > MAX_CLOCK_SKEW


def describe_skew(skew: float) -> str:
    """``"this machine's clock is 7 min behind the Cloud's"`` for a skew in seconds."""
    direction = "behind" if skew > 0 else "ahead of"
    return f"this machine's clock is {describe_duration(abs(skew))} {direction} the Cloud's"


def describe_duration(seconds: float) -> str:
    """A span of ``seconds`` (>= 0) in at most two units: ``"3 d 1 h"``, ``"1 min 1 s"``."""
    # A Date header has a one-second resolution: "2 h 1 s" or "6 min 59 s" would be noise.
    grain = 3600 if seconds >= 86400 else 60 if seconds >= 120 else 1
    whole = round(seconds / grain) * grain
    parts = []
    for name, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size} {name}")
            whole %= size
    return " ".join(parts[:2]) or "0 s"
