"""A real aiohttp server on 127.0.0.1 that answers from a script, for REST edge cases.

The reference Cloud answers correctly; this one answers whatever a test
scripts (HTML from a proxy, a 200 without fields, a skewed ``Date``), over a
real socket, so the client's whole HTTP path runs. (aioresponses would do
this in-process, but 0.7.9 cannot build responses for aiohttp 3.14.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Canned:
    """One scripted answer."""

    status: int = 200
    json: Any = None
    text: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def response(self) -> web.Response:
        """The aiohttp response for it."""
        body = self.text if self.text is not None else json.dumps(self.json)
        return web.Response(
            status=self.status, text=body, content_type=self.content_type, headers=self.headers
        )


@dataclass
class Seen:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The request's JSON body."""
        return json.loads(self.body)


class ScriptedCloud:
    """Serves scripted answers per ``(method, path)``; the last one of a script repeats."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._scripts: dict[tuple[str, str], list[Canned]] = {}
        self.seen: list[Seen] = []
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.url = ""
        #: Seconds this server's clock (its ``Date`` headers) is off the real time.
        self.clock_offset = 0.0

    def on(self, method: str, path: str, *answers: Canned) -> None:
        """Answer the next requests to ``method path`` with ``answers``, in order."""
        self._scripts[(method.upper(), path)] = list(answers)

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received for ``path``."""
        return [s for s in self.seen if s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(request.method, request.path, dict(request.headers), await request.read())
        )
        script = self._scripts.get((request.method, request.path))
        if not script:
            return web.json_response({"detail": "Not found."}, status=404)
        answer = script.pop(0) if len(script) > 1 else script[0]
        if answer.delay:
            await asyncio.sleep(answer.delay)
        response = answer.response()
        if self.clock_offset and "Date" not in answer.headers:
            response.headers["Date"] = formatdate(time.time() + self.clock_offset, usegmt=True)
        return response

    async def start(self) -> str:
        """Listen on 127.0.0.1 and a free port; return the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Stalled handlers (a scripted delay) must not hold the test up at teardown.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self._ssl else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


class Signer:
    """An RSA key pair that signs access tokens the way the Cloud does."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def token(
        self, *, now: float | None = None, lifetime: float = 300, kind: str = "access"
    ) -> str:
        """A signed token issued at ``now`` (default: the local clock)."""
        issued = time.time() if now is None else now
        claims = {
            "token_type": kind,
            "user_id": 1,
            "iat": int(issued),
            "exp": int(issued + lifetime),
            "jti": f"{kind}-{issued}",
        }
        return jwt.encode(claims, self.private_pem, algorithm="RS256")

    def public_key_answer(self) -> Canned:
        """The public-key endpoint's answer."""
        return Canned(json={"public_key": self.public_pem, "algorithm": "RS256"})

    def login_answer(self, *, now: float | None = None, with_user: bool = True) -> Canned:
        """A successful login, optionally with a ``Date`` header saying ``now``."""
        body: dict[str, Any] = {
            "access": self.token(now=now),
            "refresh": self.token(now=now, lifetime=86400, kind="refresh"),
        }
        if with_user:
            body["user"] = {"id": 1, "email": "owner@example.com"}
        headers = {"Date": formatdate(now, usegmt=True)} if now is not None else {}
        return Canned(json=body, headers=headers)


def make_registration(**overrides: Any) -> dict[str, Any]:
    """A valid register answer, with ``overrides`` applied (None removes a field)."""
    body: dict[str, Any] = {
        "hub_id": "7f1c4a1e-2b1d-4c39-9a57-0d9b8e1f2a33",
        "slug": "corner-shop",
        "tunnel_port": 7001,
        "tunnel_token": "tt_" + "x" * 40,
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@functools.cache
def get_shared_signer() -> Signer:
    """One key pair for the whole run: RSA key generation costs ~0.1 s each."""
    return Signer()


@pytest.fixture
async def scripted_cloud() -> AsyncIterator[ScriptedCloud]:
    """A :class:`ScriptedCloud` on a free loopback port, stopped afterwards."""
    cloud = ScriptedCloud()
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()
