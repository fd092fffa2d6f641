"""What a person types or pipes into a command: prompts, the password, ``--data``.

Every way such input can go wrong (Ctrl-D at a prompt, bytes that are not
UTF-8, a file that is missing or a folder) ends in a
:class:`~hublink.errors.UsageError` (exit 2) that names what was wrong;
Ctrl-C stays a ``KeyboardInterrupt`` (exit 130). The password is read
without echo whenever it comes from a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hublink.errors import UsageError

#: The most ``--data`` reads from a file or stdin; far beyond any event the
#: Cloud accepts, it only keeps a wrong file (a disk image) out of memory.
MAX_DATA_BYTES = 64 * 1024 * 1024
#: ``--data`` values that mean "read the JSON from stdin" (``@-`` as curl spells it).
STDIN_DATA = ("-", "@-")


def ask(prompt: str, *, what: str) -> str:
    """A line typed at the terminal, echoed (an email address); ``what`` names it in errors."""
    try:
        answer = input(prompt)
    except EOFError:
        raise _ended(what) from None
    except UnicodeDecodeError:
        raise _not_utf8(what, "the terminal") from None
    return _checked_text(answer, what, "the terminal")


def ask_secret(prompt: str, *, what: str) -> str:
    """A line typed at the terminal without echo (a password)."""
    import getpass

    try:
        answer = getpass.getpass(prompt)
    except EOFError:
        raise _ended(what) from None
    except UnicodeDecodeError:
        raise _not_utf8(what, "the terminal") from None
    return _checked_text(answer, what, "the terminal")


def read_line(*, what: str) -> str:
    """The first line of a stdin that is not a terminal, without its line ending."""
    try:
        line = sys.stdin.readline()
    except UnicodeDecodeError:
        raise _not_utf8(what, "stdin") from None
    return _checked_text(line.rstrip("\r\n"), what, "stdin")


def confirm(question: str) -> bool:
    """Whether the person answered yes; Ctrl-D or anything but y/yes is no."""
    try:
        answer = input(question)
    except EOFError:
        print(file=sys.stderr)  # Ctrl-D leaves the cursor after the question
        return False
    except UnicodeDecodeError:
        return False
    return answer.strip().lower() in ("y", "yes")


def event_data(value: str) -> tuple[str, str]:
    """``--data``'s JSON text, and how to name it in an error.

    ``value`` is the JSON itself, ``@FILE`` to read it from a file, or ``-``
    (also ``@-``) to read it from stdin: a 189 KB ``user_sync`` does not fit
    on a command line ("Argument list too long").

    Raises:
        UsageError: the file is missing, a folder, unreadable, over
            :data:`MAX_DATA_BYTES`, or not UTF-8 text.
    """
    if value in STDIN_DATA:
        source = "--data - (stdin)"
        if sys.stdin.isatty():
            print("reading the event's JSON from the terminal; end it with Ctrl-D", file=sys.stderr)
        raw = _read_stdin(source)
    elif value.startswith("@"):
        if value == "@":
            raise UsageError("--data @ needs a file name, e.g. --data @users.json")
        path = Path(value[1:])
        source = f"--data @{path}"
        raw = _read_file(path, source)
    else:
        return value, "--data"
    if len(raw) > MAX_DATA_BYTES:
        raise UsageError(
            f"{source} is larger than {MAX_DATA_BYTES // (1024 * 1024)} MiB: "
            "it cannot be one event",
            hint="split it into several events",
        )
    try:
        # utf-8-sig: a BOM is allowed to be ignored in JSON (RFC 8259 section 8.1).
        return raw.decode("utf-8-sig"), source
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{source} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})",
            hint="JSON is UTF-8: save the file as UTF-8",
        ) from None


def _read_stdin(source: str) -> bytes:
    try:
        return sys.stdin.buffer.read(MAX_DATA_BYTES + 1)
    except OSError as err:
        raise UsageError(f"cannot read {source}: {err.strerror or err}") from None


def _read_file(path: Path, source: str) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_DATA_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{source}: the file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{source}: {path} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"{source}: {path} is not readable by this user") from None
    except OSError as err:
        raise UsageError(f"{source}: cannot read {path}: {err.strerror or err}") from None


def _checked_text(text: str, what: str, where: str) -> str:
    # Bytes that are not UTF-8 arrive as lone surrogates where Python decodes
    # leniently (the C locale); they would reach the Cloud as garbage.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _not_utf8(what, where) from None
    return text


def _ended(what: str) -> UsageError:
    print(file=sys.stderr)  # Ctrl-D leaves the cursor after the prompt
    return UsageError(f"no {what} given: the input ended (Ctrl-D); nothing was done")


def _not_utf8(what: str, where: str) -> UsageError:
    return UsageError(
        f"the {what} from {where} is not UTF-8 text",
        hint="set the terminal (or the program feeding stdin) to UTF-8",
    )
