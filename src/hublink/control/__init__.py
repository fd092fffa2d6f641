"""The control API: HTTP over a unix socket, for the Hub application and the CLI (contract 8).

    client     :func:`request`, :func:`status_now`, :func:`fetch_status`, :func:`poke`,
               :func:`post_event`, :func:`metrics_now`:
               the CLI's side; "no daemon" is an answer, not an error
    server     :class:`~hublink.control.server.ControlServer`, the daemon's side: it
               calls the daemon's :class:`~hublink.actions.DaemonActions`
    register   reading a ``POST /v1/register`` body, and how a refusal is answered
    unixsock   the socket file: made 0660 from its first instant, stale ones replaced

Only the client is imported here: ``hublink status`` and ``hublink send`` use
it and must not load aiohttp (tests/test_imports.py); the daemon imports
:mod:`hublink.control.server` itself.
"""

from __future__ import annotations

from hublink.control.client import (
    CLIENT_TIMEOUT,
    exchange,
    fetch_status,
    metrics_now,
    poke,
    post_event,
    request,
    status_now,
)

__all__ = [
    "CLIENT_TIMEOUT",
    "exchange",
    "fetch_status",
    "metrics_now",
    "poke",
    "post_event",
    "request",
    "status_now",
]
