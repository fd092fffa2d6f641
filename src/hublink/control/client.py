"""The control API's client side: small, synchronous http.client over the unix socket.

No event loop, no aiohttp and no structlog: ``hublink status`` and ``hublink
send`` stay light (asyncio and structlog are a third of a bare ``status``;
tests/test_imports.py guards it). Every call treats "no daemon" as an answer
(None or False).
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from hublink.statusreport import StatusReport

#: The client's patience: a daemon that does not answer this fast counts as absent.
CLIENT_TIMEOUT = 2.0


class _UnixConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("hublink", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Connect to the unix socket instead of TCP."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def exchange(
    path: Path, method: str, url: str, body: Any = None, *, timeout: float = CLIENT_TIMEOUT
) -> tuple[int, bytes] | None:
    """One request to the daemon: ``(status, raw body)``, or None when no daemon answers."""
    conn = _UnixConnection(path, timeout)
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    try:
        conn.request(method, url, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return response.status, raw


def request(
    path: Path, method: str, url: str, body: Any = None, *, timeout: float = CLIENT_TIMEOUT
) -> tuple[int, Any] | None:
    """One request to the daemon: ``(status, decoded JSON)``, or None when no daemon answers."""
    answer = exchange(path, method, url, body, timeout=timeout)
    if answer is None:
        return None
    status, raw = answer
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def metrics_now(path: Path, *, timeout: float = CLIENT_TIMEOUT) -> str | None:
    """The running daemon's ``GET /metrics`` (Prometheus text), or None when no daemon answers."""
    answer = exchange(path, "GET", "/metrics", timeout=timeout)
    if answer is None or answer[0] != 200:
        return None
    return answer[1].decode("utf-8", errors="replace")


def status_now(path: Path) -> StatusReport | None:
    """The running daemon's status object, or None when no daemon answers."""
    answer = request(path, "GET", "/v1/status")
    if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
        return None
    # Our own daemon's answer (the socket is 0660, group hublink): trusted shape.
    return cast("StatusReport", answer[1])


def post_event(path: Path, event_type: str, data: dict[str, Any]) -> tuple[int, Any] | None:
    """``POST /v1/events`` to a running daemon: ``(status, answer)``, or None when none answers.

    The daemon validates and queues the event itself (contract section 8), so
    a user who may talk to the socket (group ``hublink``) but not write the
    0700 state dir can still queue events.
    """
    return request(path, "POST", "/v1/events", {"type": event_type, "data": data})


async def fetch_status(path: Path) -> StatusReport | None:
    """:func:`status_now` for async callers."""
    import asyncio  # loaded already wherever this runs; the CLI never calls it

    return await asyncio.to_thread(status_now, path)


def poke(path: Path) -> bool:
    """Wake a running daemon's outbox drain; whether a daemon answered. Never raises."""
    try:
        answer = request(path, "POST", "/v1/poke", {}, timeout=1.0)
    except Exception:
        # Best effort by contract: the event is durable already, the daemon
        # finds it at its next drain anyway.
        import structlog  # only on this rare path: the quick commands skip it

        structlog.get_logger(__name__).debug("poking the daemon failed", exc_info=True)
        return False
    return answer is not None and answer[0] == 200
