"""The one classifier of transient failures, Retry-After, and the backoff."""

from __future__ import annotations

import errno
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.frames import Close
from websockets.http11 import Response
from yarl import URL

from hublink.errors import CloudAuthError, CloudResponseError, CloudUnreachableError
from hublink.retry import (
    MAX_RETRY_AFTER,
    Backoff,
    RetryPolicy,
    full_jitter,
    is_transient,
    retry_after_of,
    retry_after_seconds,
)


def http_error(status: int, retry_after: str | None = None) -> aiohttp.ClientResponseError:
    headers = CIMultiDict({"Retry-After": retry_after} if retry_after else {})
    info = aiohttp.RequestInfo(
        url=URL("https://cloud.example/"),
        method="GET",
        headers=CIMultiDictProxy(CIMultiDict()),
        real_url=URL("https://cloud.example/"),
    )
    return aiohttp.ClientResponseError(info, (), status=status, headers=CIMultiDictProxy(headers))


def ws_status(status: int, retry_after: str | None = None) -> InvalidStatus:
    headers = Headers({"Retry-After": retry_after} if retry_after else {})
    return InvalidStatus(Response(status, "x", headers))


def connector_error(err: OSError) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("cloud.example", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, err)


TRANSIENT: list[BaseException] = [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    connector_error(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    TimeoutError(),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ServerTimeoutError(),
    http_error(429),
    http_error(500),
    http_error(503),
    ws_status(503),
    ws_status(429),
    ConnectionClosedError(None, None),
    ConnectionClosedError(Close(1012, "restart"), None),
    CloudUnreachableError("down"),
    CloudResponseError("busy", status=503),
]

PERMANENT: list[BaseException] = [
    http_error(400),
    http_error(401),
    http_error(403),
    http_error(404),
    http_error(409),
    ws_status(401),
    ws_status(403),
    ConnectionClosedError(Close(4001, "unauthorized"), None),
    ConnectionClosedError(Close(4003, "forbidden"), None),
    ssl.SSLCertVerificationError(1, "certificate verify failed"),
    CloudAuthError("wrong password", status=401),
    CloudResponseError("bad answer"),
    InvalidURI("ftp://x", "not a ws URI"),
    ValueError("a bug"),
    PermissionError(errno.EACCES, "denied"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_retry_after_in_seconds_and_as_a_date() -> None:
    now = time.time()
    assert retry_after_seconds({"Retry-After": "120"}) == 120
    assert retry_after_seconds({"Retry-After": " 0 "}) == 0
    in_a_minute = formatdate(now + 60, usegmt=True)
    got = retry_after_seconds({"Retry-After": in_a_minute}, now=now)
    assert got is not None and 59 <= got <= 61
    past = formatdate(now - 60, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}, now=now) == 0


@pytest.mark.parametrize("raw", ["soon", "-5", "nan", "-inf", ""])
def test_unusable_retry_after_is_ignored(raw: str) -> None:
    assert retry_after_seconds({"Retry-After": raw}) is None


@pytest.mark.parametrize(
    "raw",
    [
        "9999999999999",  # issue 10 item 9: OverflowError, then a crash loop
        "9" * 5000,
        "1e999",
        "inf",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ],
)
def test_a_huge_retry_after_is_clamped(raw: str) -> None:
    assert retry_after_seconds({"Retry-After": raw}) == MAX_RETRY_AFTER == 300
    assert retry_after_seconds({"Retry-After": raw}, limit=1.5) == 1.5


@settings(max_examples=500, deadline=None)
@given(
    raw=st.one_of(
        st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
        st.integers(min_value=-(10**40), max_value=10**40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(min_value=-6e10, max_value=2.5e11).map(lambda t: formatdate(t, usegmt=True)),
        st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    ),
    limit=st.floats(min_value=0.001, max_value=1e6),
)
def test_any_retry_after_gives_a_bounded_delay_or_none(raw: str, limit: float) -> None:
    # The kind: seconds of any size, negative, NaN, HTTP dates of any year, garbage.
    delay = retry_after_seconds({"Retry-After": raw}, limit=limit)
    assert delay is None or 0 <= delay <= limit
    if delay is not None:
        # What the link does with it must not overflow either.
        assert datetime.now(UTC) + timedelta(seconds=delay)


def test_retry_after_absent() -> None:
    assert retry_after_seconds({}) is None


def test_retry_after_of_aiohttp_and_websockets_errors() -> None:
    assert retry_after_of(http_error(503, "7")) == 7
    assert retry_after_of(ws_status(429, "3")) == 3
    assert retry_after_of(http_error(503)) is None
    assert retry_after_of(TimeoutError()) is None


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    assert full_jitter(1, base=0.5, cap=8, rng=lambda: 0.999) == pytest.approx(0.4995)
    assert full_jitter(3, base=0.5, cap=8, rng=lambda: 1.0) == 2.0
    assert full_jitter(10, base=0.5, cap=8, rng=lambda: 1.0) == 8.0
    assert full_jitter(4, base=0.5, cap=8, rng=lambda: 0.0) == 0.0
    draws = {round(full_jitter(5, base=1, cap=60), 3) for _ in range(50)}
    assert len(draws) > 10 and all(0 <= d <= 16 for d in draws)


def test_backoff_is_full_jitter_between_min_and_a_doubling_ceiling() -> None:
    highs = Backoff(1.0, 60.0, rand=lambda: 1.0)
    assert [highs.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    lows = Backoff(1.0, 60.0, rand=lambda: 0.0)
    assert {lows.next() for _ in range(8)} == {1.0}
    highs.reset()
    assert highs.next() == 1.0


def test_attempt_timeout_never_outlives_the_deadline() -> None:
    policy = RetryPolicy(deadline=25, request_timeout=20, connect_timeout=10)
    assert policy.timeout(0).total == 20
    assert policy.timeout(0).connect == 10
    assert policy.timeout(20).total == pytest.approx(5)
    assert policy.timeout(22).connect == pytest.approx(3)
    unbounded = RetryPolicy(deadline=None, request_timeout=None, read_timeout=60)
    assert unbounded.timeout(1000).total is None
    assert unbounded.timeout(1000).sock_read == 60


def test_default_policy_gives_up_well_within_30_seconds() -> None:
    policy = RetryPolicy()
    assert policy.deadline is not None and policy.deadline < 30


def test_classifying_never_imports_aiohttp_or_tenacity() -> None:
    """The link imports this module; it must not pay for the REST stack's imports."""
    import subprocess
    import sys

    code = (
        "import sys, hublink.retry as r\n"
        "assert r.is_transient(ConnectionResetError())\n"
        "assert not r.is_transient(ValueError())\n"
        "print(sorted(m for m in ('aiohttp', 'tenacity') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_library_another_thread_is_still_importing_does_not_break_the_classifier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The daemon imports aiohttp in a worker thread while its link connects: a
    # refused handshake classified meanwhile sees a module without its classes.
    import importlib.machinery
    import sys
    import types

    half = types.ModuleType("aiohttp")
    half.__spec__ = importlib.machinery.ModuleSpec("aiohttp", None)
    half.__spec__._initializing = True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiohttp", half)
    refused = ws_status(503, "2")
    assert retry_after_of(refused) == 2.0
    assert is_transient(refused)
    assert is_transient(ConnectionResetError())
