"""The reference Cloud on a random loopback port, and a hub enrolled in it.

Registered from ``conftest.py`` through ``pytest_plugins``. Tests use them as::

    async def test_something(devcloud: DevCloud, hub: HubEnv) -> None:
        ...  # hub.settings, hub.creds, hub.cloud is devcloud

For other shapes (two hubs, hooks, a backup database) call :func:`make_hub_env`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hublink.config import Settings, TunnelSettings, WebSettings, WebSocketSettings
from hublink.credentials import Credentials
from hublink.devcloud import CloudOptions, DevCloud
from hublink.devcloud.tokens import new_signing_key
from hublink.fsutil import ensure_private_dir
from support.timing import scaled

#: Link timings shrunk so that tests see heartbeats, reconnects and
#: unauthorized retries within a second or two (times ``HUBLINK_TEST_TIME_FACTOR``).
FAST_WEBSOCKET: dict[str, float] = {
    "heartbeat_interval": scaled(0.2),
    "reconnect_min": scaled(0.05),
    "reconnect_max": scaled(0.5),
    "reconnect_spread": scaled(0.2),
    "unauthorized_retry": scaled(1.0),
    "ping_interval": scaled(0.5),
    "ping_timeout": scaled(0.5),
}


@dataclass(frozen=True)
class HubEnv:
    """A hub enrolled in the reference Cloud: its settings, its credentials, the Cloud."""

    settings: Settings
    creds: Credentials
    cloud: DevCloud

    @property
    def hub_id(self) -> str:
        """The hub's id as text, as the Cloud's inspection methods take it."""
        return str(self.creds.hub_id)

    @property
    def token(self) -> str:
        """The hub's tunnel token in clear."""
        return self.creds.tunnel_token.get_secret_value()

    @property
    def heartbeats(self) -> list[dict[str, Any]]:
        """The heartbeats the Cloud has received from this hub so far, oldest first."""
        return self.cloud.heartbeats(self.hub_id)


def make_hub_env(
    cloud: DevCloud, base: Path, *, name: str = "Test Hub", **overrides: Any
) -> HubEnv:
    """Enroll a hub in ``cloud`` without the enrollment code and write its credentials.

    ``base`` gets ``state/`` and ``run/``; ``overrides`` are extra ``Settings``
    fields (a ``websocket`` or ``tunnel`` given here replaces the defaults).
    """
    state_dir = base / "state"
    runtime_dir = base / "run"
    ensure_private_dir(runtime_dir)
    creds = cloud.enroll_into(state_dir, name=name)
    fields: dict[str, Any] = {
        "cloud_url": cloud.url,
        "state_dir": state_dir,
        "runtime_dir": runtime_dir,
        "tunnel": TunnelSettings(enabled=False),
        "websocket": WebSocketSettings(**FAST_WEBSOCKET),
        # Any free port: daemons of parallel tests (and a real hublink) hold 8002.
        "web": WebSettings(listen="127.0.0.1:0"),
    }
    settings = Settings(**(fields | overrides))
    return HubEnv(settings=settings, creds=creds, cloud=cloud)


def make_revocation(user: str) -> dict[str, str]:
    """A ``user_revoked`` message from the Cloud for ``user``."""
    return {"type": "user_revoked", "user_id": user, "email": f"{user}@x.example", "reason": "x"}


@pytest.fixture(scope="session")
def devcloud_signing_key() -> rsa.RSAPrivateKey:
    """One JWT signing key for every test's Cloud: making one per test is slow."""
    return new_signing_key()


@pytest.fixture
async def devcloud(
    tmp_path: Path, devcloud_signing_key: rsa.RSAPrivateKey
) -> AsyncIterator[DevCloud]:
    """The reference Cloud, started on 127.0.0.1 and a free port, stopped afterwards."""
    cloud = DevCloud(tmp_path / "devcloud", CloudOptions(signing_key=devcloud_signing_key))
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()


@pytest.fixture
def hub(devcloud: DevCloud, tmp_path: Path) -> HubEnv:
    """A hub enrolled in ``devcloud``, credentials on disk, fast link timings, no tunnel."""
    return make_hub_env(devcloud, tmp_path)
