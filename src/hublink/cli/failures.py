"""What the user reads when a command fails: one message, a hint, and the exit code.

:func:`report` prints a :class:`~hublink.errors.HublinkError` (its own exit
code). :func:`report_unexpected` is the last net for whatever else escaped a
command: an ``OSError`` is named with its file (exit 78 for a permission
problem, which under the shipped unit is not restarted in a loop; 1
otherwise); anything else is a bug, reported in one line with where it
happened and how to get the traceback (``HUBLINK_LOG__LEVEL=debug``).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hublink import __version__
from hublink.errors import EXIT_CONFIG, EXIT_FAILURE, HublinkError, StateDirAccessError
from hublink.statedir import SERVICE_USER, access_denied, is_access_denied

if TYPE_CHECKING:
    from hublink.config import Settings

#: How much of an unexpected error's text is shown.
MAX_DETAIL = 300


def tolerant_output() -> None:
    """Make stdout and stderr print any text: a path or a Cloud's answer may not be UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def say(text: str) -> None:
    """One message for the user, on stderr; at priority 3 (error) when that is journald.

    Under the shipped unit a fatal start-up error must read as an error in
    ``journalctl -p err``, not as the info level journald gives unmarked lines.
    """
    from hublink.logbatch import flush  # the error path only: --version stays light
    from hublink.logs import stream_is_journal

    flush()  # a daemon's last log lines come before the error that ends it
    prefix = "<3>" if stream_is_journal(sys.stderr) else ""
    print(f"{prefix}{text}", file=sys.stderr, flush=True)


def reader_left() -> None:
    """``hublink status --json | head``: the reader left, which is not our failure.

    stdout now points at /dev/null, so Python does not print a second
    traceback while it flushes at exit.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def report(err: HublinkError, command: str | None) -> int:
    """Print ``err`` (masked: a Cloud's error text may echo a token back); its exit code."""
    from hublink.logs import mask_text

    if isinstance(err, StateDirAccessError) and command:
        # Where it was raised the command was unknown; the hint names it.
        err = access_denied(err.path, err.state_dir, command=command)
    text = str(err)
    say(f"hublink: error: {mask_text(text)}")
    return err.exit_code


def report_unexpected(err: Exception, command: str | None, settings: Settings | None) -> int:
    """Print an error no command turned into a :class:`HublinkError`; the exit code."""
    if isinstance(err, OSError):
        return _report_os_error(err, command, settings)
    from hublink.logs import mask_text

    detail = mask_text(str(err))
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "…"
    say(f"hublink: internal error: {type(err).__name__}: {detail}")
    say(
        f"  hint: this is a bug in hublink {__version__} (at {_where(err)}); please report it "
        "with this message; HUBLINK_LOG__LEVEL=debug prints the traceback"
    )
    if settings is not None and settings.log.level == "debug":
        import traceback  # only a bug's report needs it: kept off every command's start-up

        traceback.print_exception(err, file=sys.stderr)
    return EXIT_FAILURE


def _report_os_error(err: OSError, command: str | None, settings: Settings | None) -> int:
    path = _path_of(err)
    if is_access_denied(err):
        state_dir = settings.state_dir.absolute() if settings is not None else None
        if state_dir is not None and path is not None and path.is_relative_to(state_dir):
            return report(access_denied(path, state_dir), command)
        what = f"cannot use {path}" if path is not None else "an operation was refused"
        say(f"hublink: error: {what}: permission denied")
        say(
            "  hint: run it as the user that may use it, e.g. "
            f"sudo -u {SERVICE_USER} hublink {command or '…'}"
        )
        return EXIT_CONFIG
    reason = err.strerror or str(err) or type(err).__name__
    say(f"hublink: error: {reason}" + (f": {path}" if path is not None else ""))
    return EXIT_FAILURE


def _path_of(err: OSError) -> Path | None:
    name = err.filename
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return Path(name).absolute() if isinstance(name, str) and name else None


def _where(err: BaseException) -> str:
    """``module.py:LINE`` of the innermost frame in hublink's own code (what a report needs)."""
    import traceback  # only a bug's report needs it: kept off every command's start-up

    where = "unknown"
    for frame in traceback.extract_tb(err.__traceback__):
        parts = Path(frame.filename).parts
        if "hublink" in parts:
            inside = parts[len(parts) - 1 - parts[::-1].index("hublink") :]
            where = f"{'/'.join(inside)}:{frame.lineno}"
    return where
