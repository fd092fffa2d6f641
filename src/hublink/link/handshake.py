"""The link's WebSocket handshake: its URL and options (contract section 2), in one place.

The link opens every connection here, and ``hublink doctor`` its trial one, so
the two never differ in TLS, proxy, keepalive or size limits.
"""

from __future__ import annotations

import ssl as ssl_module
from typing import TYPE_CHECKING
from urllib.parse import quote

from websockets.asyncio.client import connect

from hublink import __version__
from hublink.logs import mask_text

if TYPE_CHECKING:
    from hublink.config import Settings
    from hublink.credentials import Credentials

#: Bounded wait for the closing handshake, so that shutdown ends within its deadline.
CLOSE_TIMEOUT = 2.0
#: How much of a failure's description reaches the log and ``last_error``.
DESCRIBED_CHARS = 200


def ws_url(settings: Settings, creds: Credentials) -> str:
    """``ws(s)://host[:port]/ws/hub/{hub_id}/?token=…``; the token is a secret."""
    scheme = "wss" if settings.cloud_scheme == "https" else "ws"
    netloc = settings.cloud_url.split("://", 1)[1].rstrip("/")
    # Percent-encoded: a token with "+", "&" or "=" must reach the Cloud's query
    # parser unchanged ("+" would otherwise arrive as a space).
    token = quote(creds.tunnel_token.get_secret_value(), safe="")
    return f"{scheme}://{netloc}/ws/hub/{creds.hub_id}/?token={token}"


def open_handshake(
    settings: Settings,
    creds: Credentials,
    *,
    ssl: ssl_module.SSLContext | None,
    open_timeout: float | None = None,
) -> connect:
    """The link's WebSocket connection to the Cloud, not yet opened: await it or ``async with`` it.

    The one place that knows the link's URL, TLS, proxy (websockets reads
    ``HTTPS_PROXY``) and keepalive options; ``doctor`` opens its trial
    handshake here too. ``open_timeout`` (seconds) defaults to the ping timeout.
    """
    ws_cfg = settings.websocket
    return connect(
        ws_url(settings, creds),
        ssl=ssl if settings.cloud_scheme == "https" else None,
        user_agent_header=f"hublink/{__version__}",
        open_timeout=ws_cfg.ping_timeout if open_timeout is None else open_timeout,
        ping_interval=ws_cfg.ping_interval,
        ping_timeout=ws_cfg.ping_timeout,
        close_timeout=CLOSE_TIMEOUT,
        max_size=ws_cfg.max_message_size,
        # Frames are small JSON: deflate would cost CPU and a zlib context per link.
        compression=None,
    )


def describe_failure(err: BaseException) -> str:
    """A short, secret-free description of a connection failure."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    elif isinstance(err, TimeoutError):
        text = "timed out opening the connection"
    return mask_text(f"{type(err).__name__}: {text}"[:DESCRIBED_CHARS])
