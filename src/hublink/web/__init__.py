"""The daemon's local page (contract section 9): setup wizard and status.

The daemon builds a :class:`PageActions`, calls :func:`build_app` and serves
the result with :class:`PageServer` (or :func:`serve_page`, both at once); the
page never imports the daemon.

The page's own names load their module when first used (:mod:`hublink._lazy`):
``hublink status`` reads the setup code through :mod:`hublink.web.code` and
must not pay for aiohttp, Jinja2 and Babel (tests/test_imports.py measures it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hublink._lazy import lazy_exports

if TYPE_CHECKING:
    from hublink.web.actions import PageActions as PageActions
    from hublink.web.actions import Registered as Registered
    from hublink.web.actions import Registration as Registration
    from hublink.web.app import build_app as build_app
    from hublink.web.code import code_path as code_path
    from hublink.web.code import read_code as read_code
    from hublink.web.code import read_or_create_code as read_or_create_code
    from hublink.web.server import PageServer as PageServer
    from hublink.web.server import serve_page as serve_page

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "actions": ["PageActions", "Registered", "Registration"],
        "app": ["build_app"],
        "code": ["code_path", "read_code", "read_or_create_code"],
        "server": ["PageServer", "serve_page"],
    },
)
