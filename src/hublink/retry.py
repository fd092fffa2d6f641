"""Which failures are worth another try, and how long to wait before it.

One verdict, :func:`is_transient`, serves both the REST client (through
tenacity, :func:`hublink.cloud.retrying.rest_retrying`) and the WebSocket link's reconnect loop, so
the two never disagree about what a passing outage looks like:

* transient: connection refused or reset, DNS failure, timeouts, a dropped
  connection, HTTP 429 and 5xx (from aiohttp, websockets or the Cloud);
* permanent: every other 4xx, TLS verification failures (a wrong CA does not
  heal itself), malformed URLs, and anything hublink does not recognise.

``Retry-After`` (seconds or an HTTP date) is read by :func:`retry_after_seconds`
and honoured as a minimum wait, but never beyond :data:`MAX_RETRY_AFTER`: the
header is the server's, and a server (or a proxy in front of it) that asks
for a year, or for 10**13 seconds, must not park a Hub that long.
"""

from __future__ import annotations

import enum
import errno
import math
import random
import socket
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog

from hublink.clock import parse_http_date
from hublink.errors import CloudError, CloudUnreachableError

log = structlog.get_logger(__name__)

#: Close codes with which the Cloud rejects a hub's credentials (contract §2).
AUTH_CLOSE_CODES = frozenset({4001, 4003})
#: HTTP answers with which the Cloud refuses a hub's credentials at the handshake.
AUTH_REFUSED_STATUSES = frozenset({401, 403})

#: How long a REST call may take, waits included, before the Cloud counts as
#: unreachable. The contract promises exit 69 within 30 s; the rest of the
#: margin is process start-up and the final error report.
DEFAULT_DEADLINE = 20.0
DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 8.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 10.0
#: The longest wait a ``Retry-After`` may impose, in seconds: the link's slow
#: retry of a refused hub (``websocket.unauthorized_retry``, 300 s) is the
#: longest hublink ever waits between two tries of anything, and a server's
#: hint is not allowed to exceed it.
MAX_RETRY_AFTER = 300.0

#: OSErrors that mean "the network is in the way right now", not a local bug.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
        errno.ECONNABORTED,
    }
)


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 429 and 5xx, never another 4xx."""
    return status == 429 or 500 <= status <= 599


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a passing failure that the same request may get past later."""
    status = status_of(exc)
    if status is not None:
        return is_transient_status(status)
    if isinstance(exc, CloudError):
        # Already a final verdict of the REST client; "unreachable" is the
        # only one that a later attempt can change.
        return isinstance(exc, CloudUnreachableError)
    ws_verdict = _websockets_verdict(exc)
    if ws_verdict is not None:
        return ws_verdict
    # TLS problems come before OSError: ssl.SSLError is one, and a certificate
    # that does not verify now will not verify in a second either.
    if isinstance(exc, ssl.SSLError):
        return False
    aio_verdict = _aiohttp_verdict(exc)
    if aio_verdict is not None:
        return aio_verdict
    return isinstance(exc, TimeoutError | ConnectionError | socket.gaierror | EOFError) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
    )


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind ``exc``, if it is an HTTP-level failure."""
    aio = _loaded("aiohttp")
    if aio is not None and isinstance(exc, aio.ClientResponseError):
        return int(exc.status) or None
    if isinstance(exc, CloudError):
        return exc.status
    response = _websockets_response(exc)
    if response is not None:
        return int(response.status_code)
    return None


def retry_after_of(exc: BaseException, *, limit: float = MAX_RETRY_AFTER) -> float | None:
    """The ``Retry-After`` that came with ``exc`` (aiohttp or websockets), in seconds.

    See :func:`retry_after_seconds` for the range and ``limit``.
    """
    return retry_after_seconds(headers_of(exc), limit=limit)


def headers_of(exc: BaseException) -> Mapping[str, str]:
    """The HTTP response headers behind ``exc`` (aiohttp or websockets); empty if none."""
    aio = _loaded("aiohttp")
    if aio is not None and isinstance(exc, aio.ClientResponseError):
        return exc.headers or {}
    response = _websockets_response(exc)
    return response.headers if response is not None else {}


def retry_after_seconds(
    headers: Mapping[str, str], *, now: float | None = None, limit: float = MAX_RETRY_AFTER
) -> float | None:
    """``Retry-After`` as seconds from now, in ``[0, limit]``; None when there is none to honour.

    Delay-seconds of any size (a huge one is cut to ``limit``) or an HTTP date
    (one in the past is 0). Absent, empty, negative, NaN or unreadable values
    give None: the caller's own backoff applies. Never raises.
    """
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        # inf ("1e999", 400 digits) is a huge delay: clamped like any other.
        return min(seconds, limit) if seconds >= 0 and not math.isnan(seconds) else None
    when = parse_http_date(raw)
    if when is None:
        return None
    current = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - current), limit)


class Jitter(enum.Enum):
    """Where in ``[floor, ceiling]`` a :class:`Backoff` draws each delay."""

    #: Uniform over the whole window (AWS's "full jitter"): a fleet coming back
    #: after an outage spreads over the window instead of arriving in waves.
    FULL = "full"
    #: Uniform over the upper half ("equal jitter"): never much faster than the
    #: ceiling, still out of step with the neighbours.
    EQUAL = "equal"
    #: Exactly the ceiling: a local retry no one else competes with.
    NONE = "none"


@dataclass
class Backoff:
    """Exponential backoff: the ceiling doubles from ``low`` up to ``high`` at every attempt.

    The one backoff of hublink; the link, the tunnel, task restarts, hook
    retries and REST retries differ only in their parameters:

    * ``jitter`` (:class:`Jitter`) picks the delay inside ``[floor, ceiling]``;
    * ``floor`` is the smallest delay, ``low`` unless given (REST uses 0).

    Delays are in seconds. ``rand`` returns floats in ``[0, 1)`` (tests pin it).
    """

    low: float
    high: float
    jitter: Jitter = Jitter.FULL
    floor: float | None = None
    rand: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1-based), without changing the state."""
        ceiling = min(self.high, self.low * 2.0 ** min(max(attempt - 1, 0), 32))
        floor = min(self.low if self.floor is None else self.floor, ceiling)
        if self.jitter is Jitter.NONE:
            return ceiling
        if self.jitter is Jitter.EQUAL:
            return max(floor, ceiling * (0.5 + self.rand() / 2))
        return floor + (ceiling - floor) * self.rand()

    def next(self) -> float:
        """The delay after one more failure; each call widens the window until ``high``."""
        self.failures += 1
        return self.delay(self.failures)

    def reset(self) -> None:
        """Back to the shortest delays, after an attempt that held."""
        self.failures = 0


def full_jitter(
    attempt: int, *, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2**(attempt-1))] (REST retries)."""
    return Backoff(base, cap, Jitter.FULL, floor=0.0, rand=rng).delay(attempt)


class AttemptTimeout(NamedTuple):
    """One attempt's limits in seconds (None: none), as ``aiohttp.ClientTimeout`` takes them."""

    total: float | None
    connect: float | None
    sock_read: float | None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a REST call tries before the Cloud is called unreachable.

    ``deadline`` bounds the whole call, waits and attempts included (None: no
    bound, for a long upload); the per-attempt timeouts are cut to what is left.
    """

    attempts: int = DEFAULT_ATTEMPTS
    deadline: float | None = DEFAULT_DEADLINE
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    read_timeout: float | None = None

    def timeout(self, elapsed: float) -> AttemptTimeout:
        """The limits of an attempt starting ``elapsed`` seconds into the call, in seconds."""
        total = self.request_timeout
        connect = self.connect_timeout
        if self.deadline is not None:
            # Never let one slow attempt carry the call past its deadline.
            left = max(self.deadline - elapsed, 0.05)
            total = left if total is None else min(total, left)
            connect = min(connect, left)
        return AttemptTimeout(total=total, connect=connect, sock_read=self.read_timeout)


DEFAULT_POLICY = RetryPolicy()


def describe_transient(exc: BaseException) -> str:
    """A short human description of a network-level failure, for messages and logs."""
    status = status_of(exc)
    if status is not None:
        message = getattr(exc, "message", "") or ""
        return f"HTTP {status}" + (f" {message}" if message else "")
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    return _aiohttp_description(exc) or str(exc) or type(exc).__name__


def describe_tls_failure(exc: BaseException) -> str | None:
    """Why a TLS handshake failed (a certificate's verify message), or None if it did not."""
    certificate = certificate_failure(exc)
    if certificate is not None:
        return getattr(certificate, "verify_message", "") or str(certificate)
    aio = _loaded("aiohttp")
    if isinstance(exc, ssl.SSLError) or (aio is not None and isinstance(exc, aio.ClientSSLError)):
        return str(exc)
    return None


def certificate_failure(exc: BaseException) -> BaseException | None:
    """The certificate check that failed behind ``exc`` (aiohttp wraps it), or None."""
    aio = _loaded("aiohttp")
    if aio is not None and isinstance(exc, aio.ClientConnectorCertificateError):
        return exc.certificate_error  # type: ignore[no-any-return]
    return exc if isinstance(exc, ssl.SSLCertVerificationError) else None


# --- libraries, looked at only when they are already imported ----------------
# An exception can only be one of a library's types if the library is loaded;
# so the REST path never imports websockets, and the link never imports
# aiohttp (each costs start-up time and memory) just to classify a failure.


def _loaded(name: str) -> Any:
    """``name`` if it is imported and done initializing, else None.

    The daemon imports aiohttp in a worker thread while its link connects
    (hublink.localservers): a module still being imported is already in
    sys.modules, without the classes it has yet to define, and nothing it
    raises can exist before they do. ``__spec__._initializing`` is the flag
    CPython's import system itself reads to call a module "partially initialized".
    """
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def _aiohttp_verdict(exc: BaseException) -> bool | None:
    aio = _loaded("aiohttp")
    if aio is None:
        return None
    if isinstance(exc, aio.ClientSSLError):
        return False
    if isinstance(exc, aio.ClientConnectionError | aio.ClientPayloadError):
        return True
    return None


def _aiohttp_description(exc: BaseException) -> str | None:
    aio = _loaded("aiohttp")
    if aio is None:
        return None
    if isinstance(exc, aio.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aio.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aio.ServerDisconnectedError):
        return "the server closed the connection"
    return None


def _websockets_response(exc: BaseException) -> Any:
    module = _loaded("websockets.exceptions")
    if module is None:
        return None
    if isinstance(exc, module.InvalidStatus | module.InvalidProxyStatus):
        return exc.response
    return None


def _websockets_verdict(exc: BaseException) -> bool | None:
    module = _loaded("websockets.exceptions")
    if module is None:
        return None
    if isinstance(exc, module.ConnectionClosed):
        received = exc.rcvd
        return received is None or received.code not in AUTH_CLOSE_CODES
    if isinstance(exc, module.InvalidMessage):
        # A handshake cut short by the network, as websockets itself decides.
        return isinstance(exc.__cause__, EOFError | OSError)
    if isinstance(exc, module.InvalidURI | module.InvalidHandshake):
        return False
    return None
