"""The setup code that unlocks the page (contract section 9).

The code lives in ``{state_dir}/web-code`` (0600). It is a secret: it never
reaches a log line; the log names the file instead. The daemon makes it
(:func:`read_or_create_code`); ``hublink status`` only reads it
(:func:`read_code`) to print the page's URL, so a status run as root never
leaves a file the ``hublink`` user cannot read.
"""

from __future__ import annotations

from pathlib import Path

from hublink.fsutil import atomic_write, create_once
from hublink.statedir import WEB_CODE

#: Letters a person copies without confusing them (no 0/O, 1/l/I).
ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY3479"
#: 12 characters of a 49-letter alphabet: about 67 bits, far beyond 5 guesses a minute.
CODE_LENGTH = 12
#: Shorter codes in a hand-edited file are refused: the contract asks for 8+.
MIN_LENGTH = 8


def code_path(state_dir: Path) -> Path:
    """Where the setup code is kept."""
    return state_dir / WEB_CODE


def read_code(state_dir: Path) -> str | None:
    """The setup code, or None when it is missing, unusable or not readable by this user."""
    try:
        return _read(code_path(state_dir))
    except OSError:
        return None


def read_or_create_code(state_dir: Path) -> str:
    """The setup code, created (0600, atomically) when the file is missing or unusable.

    Two processes racing here (the daemon and ``hublink status``) agree on one
    code: the file appears whole through a hard link that only one of them wins.
    """
    path = code_path(state_dir)
    existing = _read(path)
    if existing is not None:
        return existing
    import secrets  # hashlib and hmac with it: `hublink status` only reads the code

    code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    _publish(path, code)
    # Whoever won the race, the file now holds the code everyone uses.
    return _read(path) or code


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if len(text) < MIN_LENGTH or not text.isascii() or not text.isalnum():
        return None
    return text


def _publish(path: Path, code: str) -> None:
    data = f"{code}\n".encode("ascii")
    # An unusable file (too short, not text) is replaced; a good one won the race.
    if not create_once(path, data) and _read(path) is None:
        atomic_write(path, data)
