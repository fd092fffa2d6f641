"""One doctor check's verdict, and the small helpers every family of checks shares."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    """One check's verdict; ``hint`` says what to do when it did not pass."""

    name: str
    status: Status
    detail: str
    hint: str | None = None


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid N`` when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def os_reason(err: OSError) -> str:
    """The plain words of an OSError's errno (``connection refused``)."""
    # asyncio's "Connect call failed (...)" hides the errno's plain words.
    if err.errno:
        return os.strerror(err.errno).lower()
    return err.strerror or str(err) or type(err).__name__
