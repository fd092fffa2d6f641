"""What the page asks of the daemon: one typed object, so the page never imports it.

The daemon builds a :class:`PageActions` from its own services and hands it
to :func:`hublink.web.build_app`; the tests hand in a small in-memory one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr


@dataclass(frozen=True)
class Registration:
    """What the setup form collected, already checked for shape and length."""

    email: str
    password: SecretStr
    name: str
    address: str


@dataclass(frozen=True)
class Registered:
    """What a successful registration answers."""

    hub_id: str
    slug: str


@dataclass(frozen=True)
class PageActions:
    """The daemon's services the page calls; each mirrors a control API call (contract 8).

    Attributes:
        status: the ``status --json`` object of contract section 5 (``GET /v1/status``),
            with ``last_backup``; the page also shows ``name`` (the hub's name) and
            ``next_backup_at`` when present. The JWT must not be in it.
        register: the ``POST /v1/register`` flow without ``force``. Raises
            ``AlreadyRegisteredError``, ``CloudAuthError`` (wrong password),
            ``CloudUnreachableError``, ``CloudError``, ``UsageError`` or
            ``ConfigError`` from :mod:`hublink.errors`; the page words each one.
        backup: start a backup; False when one is running already.
        install_update: run the ``install_plugin_update`` hook for a plugin id;
            False when no update is recorded for it.
        doctor: the ``doctor --json`` object: ``{"ok", "checks": [{"name",
            "status", "detail", "hint"}]}``.
        install_hook_configured: whether ``hooks.install_plugin_update`` is set;
            the **Install** buttons are hidden without it.
    """

    status: Callable[[], Awaitable[dict[str, Any]]]
    register: Callable[[Registration], Awaitable[Registered]]
    backup: Callable[[], Awaitable[bool]]
    install_update: Callable[[str], Awaitable[bool]]
    doctor: Callable[[], Awaitable[dict[str, Any]]]
    install_hook_configured: bool = False


@dataclass(frozen=True)
class WebSettings:
    """The ``[web]`` settings the page needs (contract section 9).

    Attributes:
        listen: ``HOST:PORT``; an IPv6 host in brackets (``[::1]:8002``).
        language: ``en`` or ``es`` to force one; None follows ``Accept-Language``.
    """

    listen: str = "127.0.0.1:8002"
    language: str | None = None
