"""The daemon's local page (contract section 9): setup wizard and status.

The daemon builds a :class:`PageActions`, calls :func:`build_app` and serves
the result with :class:`PageServer`; the page never imports the daemon.
"""

from __future__ import annotations

from hublink.web.actions import PageActions, Registered, Registration, WebSettings
from hublink.web.app import build_app
from hublink.web.code import code_path, read_or_create_code
from hublink.web.server import PageServer, WebListenError, parse_listen

__all__ = [
    "PageActions",
    "PageServer",
    "Registered",
    "Registration",
    "WebListenError",
    "WebSettings",
    "build_app",
    "code_path",
    "parse_listen",
    "read_or_create_code",
]
