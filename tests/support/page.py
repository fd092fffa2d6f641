"""An in-memory stand-in for the daemon behind the page, and helpers to drive the page."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from hublink.errors import CloudAuthError, HublinkError
from hublink.web import PageActions, Registered, Registration

CONNECTED: dict[str, Any] = {
    "registered": True,
    "hub_id": "7f0c2d1e-0000-4000-8000-000000000001",
    "slug": "main-street",
    "name": "Main Street shop",
    "cloud_url": "https://cloud.example",
    "daemon": {"running": True, "pid": 1234},
    "websocket": {
        "state": "connected",
        "last_heartbeat_at": "2026-11-29T10:00:00Z",
        "reconnects": 0,
        "last_error": None,
        "next_attempt_at": None,
    },
    "tunnel": {"state": "running", "pid": 1240, "restarts": 0, "last_error": None},
    "outbox": {"pending": 3},
    "plugin_updates": [
        {"plugin_id": "inventory", "current_version": "1.2.0", "new_version": "1.3.0"}
    ],
    "revoked_users": [{"user_id": "u-17", "email": "ana@shop.example", "reason": "left"}],
    "last_backup": {"result": "completed", "at": "2026-11-29T03:00:00Z", "filename": "b.age"},
}
UNREGISTERED: dict[str, Any] = {**copy.deepcopy(CONNECTED), "registered": False, "slug": None}


@dataclass
class FakeDaemon:
    """The page's actions, answered from memory; records what the page asked."""

    status_doc: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(UNREGISTERED))
    register_error: HublinkError | None = None
    #: When set, any other password is refused as the Cloud would (CloudAuthError).
    accepted_password: str | None = None
    backup_running: bool = False
    install_hook: bool = True
    doctor_doc: dict[str, Any] = field(
        default_factory=lambda: {
            "ok": False,
            "checks": [
                {"name": "cloud reachable", "status": "pass", "detail": "200 OK", "hint": None},
                {"name": "frpc", "status": "fail", "detail": "not found", "hint": "install frp"},
            ],
        }
    )
    registrations: list[Registration] = field(default_factory=list)
    backups: int = 0
    installs: list[str] = field(default_factory=list)

    async def status(self) -> dict[str, Any]:
        return copy.deepcopy(self.status_doc)

    async def register(self, registration: Registration) -> Registered:
        self.registrations.append(registration)
        if self.register_error is not None:
            raise self.register_error
        if self.accepted_password not in (None, registration.password.get_secret_value()):
            raise CloudAuthError("wrong email or password", status=401)
        self.status_doc = {**copy.deepcopy(CONNECTED), "name": registration.name}
        return Registered(hub_id=CONNECTED["hub_id"], slug=CONNECTED["slug"])

    async def backup(self) -> bool:
        if self.backup_running:
            return False
        self.backups += 1
        self.backup_running = True
        return True

    async def install_update(self, plugin_id: str) -> bool:
        self.installs.append(plugin_id)
        return any(u.get("plugin_id") == plugin_id for u in self.status_doc["plugin_updates"])

    async def doctor(self) -> dict[str, Any]:
        return copy.deepcopy(self.doctor_doc)

    def actions(self) -> PageActions:
        return PageActions(
            status=self.status,
            register=self.register,
            backup=self.backup,
            install_update=self.install_update,
            doctor=self.doctor,
            install_hook_configured=self.install_hook,
        )


def make_origin(client: TestClient[Any, Any]) -> str:
    """The page's own origin, as a browser would send it."""
    return f"http://{client.host}:{client.port}"


def find_csrf_token(html: str) -> str:
    """The CSRF token a rendered page carries."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def fetch_csrf_token(client: TestClient[Any, Any]) -> str:
    """The CSRF token of the current session's page."""
    response = await client.get("/")
    return find_csrf_token(await response.text())


async def post(
    client: TestClient[Any, Any],
    path: str,
    data: dict[str, str] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    follow: bool = False,
) -> Any:
    """POST a form the way the page does: its origin and its CSRF token."""
    fields = dict(data or {})
    fields.setdefault("csrf_token", token if token is not None else await fetch_csrf_token(client))
    sent = {"Origin": make_origin(client), **(headers or {})}
    return await client.post(path, data=fields, headers=sent, allow_redirects=follow)
