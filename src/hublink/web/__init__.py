"""The daemon's local page (contract section 9): setup wizard and status.

The daemon builds a :class:`PageActions`, calls :func:`build_app` and serves
the result with :class:`PageServer`; the page never imports the daemon.

The names below load on first use: ``hublink status`` reads the setup code
through :mod:`hublink.web.code` and must not pay for aiohttp, Jinja2 and
Babel (tests/test_imports.py measures it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hublink.config import WebSettings, parse_listen
    from hublink.errors import WebListenError
    from hublink.web.actions import PageActions, Registered, Registration
    from hublink.web.app import build_app
    from hublink.web.code import code_path, read_code, read_or_create_code
    from hublink.web.server import PageServer

_HOMES = {
    "PageActions": "hublink.web.actions",
    "Registered": "hublink.web.actions",
    "Registration": "hublink.web.actions",
    "WebSettings": "hublink.config",
    "parse_listen": "hublink.config",
    "WebListenError": "hublink.errors",
    "build_app": "hublink.web.app",
    "code_path": "hublink.web.code",
    "read_code": "hublink.web.code",
    "read_or_create_code": "hublink.web.code",
    "PageServer": "hublink.web.server",
}

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
    "read_code",
    "read_or_create_code",
]


def __getattr__(name: str) -> Any:
    """Load an exported name from its module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
