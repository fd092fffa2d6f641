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
    from hublink.web.actions import PageActions, Registered, Registration
    from hublink.web.app import build_app
    from hublink.web.code import code_path, read_code, read_or_create_code
    from hublink.web.server import PageServer, serve_page

_EXPORTS = {
    "PageActions": "actions",
    "Registered": "actions",
    "Registration": "actions",
    "build_app": "app",
    "code_path": "code",
    "read_code": "code",
    "read_or_create_code": "code",
    "PageServer": "server",
    "serve_page": "server",
}
__all__ = [
    "PageActions",
    "PageServer",
    "Registered",
    "Registration",
    "build_app",
    "code_path",
    "read_code",
    "read_or_create_code",
    "serve_page",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
