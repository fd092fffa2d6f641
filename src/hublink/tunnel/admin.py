"""frpc's admin API, asked by the tunnel supervisor whether the proxy runs.

``GET /api/status`` on ``webServer`` (127.0.0.1:``tunnel.admin_port``, basic
auth with the password of this frpc run), as frp's docs describe the admin
server. A client of its own: it only ever talks to 127.0.0.1, and must not
follow ``HTTP(S)_PROXY`` from the environment like the Cloud session does.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

from hublink.tunnel.config import ADMIN_USER


class AdminAPI:
    """One frpc run's admin API; :meth:`close` when that run ends.

    Args:
        port: ``tunnel.admin_port``.
        password: the admin password written into this run's ``frpc.toml``.
        timeout: seconds one question may take.
    """

    def __init__(self, port: int, password: str, timeout: float) -> None:
        self._url = f"http://127.0.0.1:{port}/api/status"
        credentials = base64.b64encode(f"{ADMIN_USER}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = aiohttp.ClientSession(trust_env=False)

    async def status(self) -> dict[str, Any] | None:
        """frpc's ``/api/status`` as a dict, or None when it does not answer usefully."""
        try:
            async with self._session.get(
                self._url, headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status != 200:
                    return None
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def close(self) -> None:
        """Close the connection pool."""
        await self._session.close()
