"""What the CLI says when something unexpected escapes a command: one line, and where to go."""

from __future__ import annotations

import contextlib
import errno
import io
from pathlib import Path

from hublink import __version__
from hublink.cli.failures import report_unexpected


def test_an_unexpected_error_is_one_line_with_where_and_a_bug_hint() -> None:
    try:
        int("1" * 5000)
    except ValueError as caught:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = report_unexpected(caught, "send", None)
    assert code == 1
    first, hint = err.getvalue().splitlines()
    assert first.startswith("hublink: internal error: ValueError: Exceeds the limit")
    assert f"bug in hublink {__version__}" in hint and "HUBLINK_LOG__LEVEL=debug" in hint


def test_an_os_error_that_escapes_names_its_file(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = report_unexpected(
            OSError(errno.ENOSPC, "No space left on device", str(tmp_path)), "backup", None
        )
    assert code == 1
    assert err.getvalue() == f"hublink: error: No space left on device: {tmp_path}\n"
