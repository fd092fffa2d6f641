"""The checks of the way to the Cloud: its REST API, its TLS certificate, its clock, the link."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp
from pydantic import ValidationError
from websockets.exceptions import InvalidStatus, WebSocketException

from hublink.addresses import is_loopback
from hublink.clock import clock_skew, describe_skew, parse_http_date, skew_is_too_large
from hublink.cloud import PUBLIC_KEY_PATH, PublicKey, make_session, public_key_problem
from hublink.config import Settings
from hublink.credentials import Credentials
from hublink.doctor.check import Check, os_reason
from hublink.errors import ConfigError
from hublink.link.handshake import open_handshake
from hublink.logs import mask_text
from hublink.retry import AUTH_REFUSED_STATUSES, describe_tls_failure, describe_transient
from hublink.statusreport import StatusReport
from hublink.tls import ssl_context


@dataclass
class _Fetched:
    """What the public-key request brought back: an answer, or the error that stopped it."""

    status: int = 0
    body: bytes = b""
    date: str | None = None
    error: BaseException | None = None


async def cloud_checks(settings: Settings, patience: float) -> list[Check]:
    """``cloud``, ``tls`` and ``clock``, from one GET of the public key (``patience`` in s)."""
    url = settings.cloud_url + PUBLIC_KEY_PATH
    try:
        session = make_session(settings)
    except ConfigError as err:
        return [
            Check("cloud", "skip", "no TLS settings to connect with"),
            Check("tls", "fail", err.message, err.hint),
            Check("clock", "skip", "needs an answer from the Cloud"),
        ]
    async with session:
        fetched = await _fetch(session, url, patience)
    return [
        _public_key_check(settings, url, fetched),
        _tls_check(settings, fetched),
        _clock_check(fetched),
    ]


async def _fetch(session: aiohttp.ClientSession, url: str, patience: float) -> _Fetched:
    fetched = _Fetched()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=patience)) as resp:
            fetched.status = resp.status
            fetched.date = resp.headers.get("Date")
            fetched.body = await resp.content.read(1024 * 1024)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        fetched.error = err
    return fetched


def _public_key_check(settings: Settings, url: str, fetched: _Fetched) -> Check:
    if fetched.error is not None:
        if describe_tls_failure(fetched.error) is not None:
            return Check(
                "cloud", "fail", f"{url}: the TLS handshake failed", "see the tls check below"
            )
        return Check(
            "cloud",
            "fail",
            f"{url} cannot be reached: {_network_reason(fetched.error)}",
            f"check the network, cloud_url, and HTTPS_PROXY/NO_PROXY; try: curl -sS {url}",
        )
    if fetched.status != 200:
        return Check(
            "cloud",
            "fail",
            f"{url} answered HTTP {fetched.status}",
            "the Cloud is up but unhappy: check cloud_url, or try again later",
        )
    problem = _public_key_problem(fetched.body)
    if problem:
        return Check(
            "cloud",
            "fail",
            f"{url}: {problem}",
            "check cloud_url: a proxy or another server may be answering in the Cloud's place",
        )
    return Check("cloud", "pass", f"{settings.cloud_url} answers with its RS256 public key")


def _network_reason(err: BaseException) -> str:
    if isinstance(err, aiohttp.ClientConnectorError) and not isinstance(
        err, aiohttp.ClientConnectorDNSError
    ):
        # retry's wording shows strerror ("Connect call failed"); the errno's words say more.
        return f"cannot connect ({os_reason(err.os_error)})"
    return describe_transient(err)


def _public_key_problem(body: bytes) -> str | None:
    try:
        key = PublicKey.model_validate_json(body)
    except ValidationError:
        return "the answer is not a public key object"
    return public_key_problem(key)


def _tls_check(settings: Settings, fetched: _Fetched) -> Check:
    if settings.cloud_scheme == "http":
        if is_loopback(settings.cloud_host):
            return Check("tls", "skip", "plain http to this machine (development Cloud)")
        return Check(
            "tls",
            "warn",
            f"plain http to {settings.cloud_host}: the link is not encrypted",
            "use an https:// cloud_url",
        )
    if fetched.error is not None:
        reason = describe_tls_failure(fetched.error)
        if reason is not None:
            return Check(
                "tls",
                "fail",
                f"the certificate of {settings.cloud_host} does not verify: {reason}",
                "check the clock; behind a TLS-inspecting proxy, put its CA in tls.ca_file",
            )
        return Check("tls", "skip", "no connection to check a certificate on")
    return Check("tls", "pass", f"the certificate of {settings.cloud_host} verifies")


def _clock_check(fetched: _Fetched) -> Check:
    if fetched.error is not None:
        return Check("clock", "skip", "needs an answer from the Cloud")
    if not fetched.date:
        return Check("clock", "skip", "the Cloud's answer carried no Date header")
    cloud_time = parse_http_date(fetched.date)
    if cloud_time is None:
        return Check("clock", "skip", f"the Cloud's Date header is unreadable: {fetched.date!r}")
    skew = clock_skew(cloud_time)
    if skew_is_too_large(skew):
        return Check(
            "clock",
            "fail",
            f"{describe_skew(skew)}; TLS certificates and login tokens break beyond a minute",
            "turn on time synchronisation (timedatectl set-ntp true) or set the clock",
        )
    return Check("clock", "pass", f"within {abs(skew):.0f} s of the Cloud's")


async def websocket_check(
    settings: Settings,
    creds: Credentials | None,
    daemon_status: StatusReport | None,
    patience: float,
) -> Check:
    """``websocket``: the hub's token opens the link, by the link's own handshake (or it is up)."""
    if creds is None:
        return Check("websocket", "skip", "needs the hub's credentials")
    if daemon_status is not None and daemon_status["websocket"]["state"] == "connected":
        # A second handshake would replace the daemon's own link on the Cloud.
        return Check("websocket", "pass", "the running daemon's link is connected")
    context: ssl.SSLContext | None = None
    if settings.cloud_scheme == "https":
        try:
            context = ssl_context(settings)
        except ConfigError as err:
            return Check("websocket", "skip", err.message)
    try:
        async with open_handshake(settings, creds, ssl=context, open_timeout=patience) as ws:
            await ws.close()
    except (WebSocketException, OSError, TimeoutError) as err:
        return _handshake_failure(err)
    return Check("websocket", "pass", "the Cloud accepted the hub's token; closed cleanly")


def _handshake_failure(err: BaseException) -> Check:
    if isinstance(err, InvalidStatus):
        status = err.response.status_code
        if status in AUTH_REFUSED_STATUSES:
            return Check(
                "websocket",
                "fail",
                f"the Cloud refused the hub's token (HTTP {status}): revoked or deleted",
                "enroll again: sudo -u hublink hublink register --force",
            )
        return Check(
            "websocket",
            "fail",
            f"the Cloud answered the handshake with HTTP {status}",
            "check cloud_url; a proxy may be in the way of WebSockets",
        )
    return Check(
        "websocket",
        "fail",
        f"the handshake failed: {mask_text(describe_transient(err))}",
        "check the network and that proxies let WebSockets through",
    )
