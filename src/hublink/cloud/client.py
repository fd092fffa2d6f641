"""The Cloud's REST client (contract section 1): the session, requests, error mapping.

    make_session(settings)            the process's one aiohttp session
    CloudClient(session, settings)
      .login / .refresh / .public_key / .register   typed, validated answers
      .request(...)                   any other call: retries and error mapping
      .clock_skew / .server_now()     what the Cloud's ``Date`` header says

The answers' models and their reading are in :mod:`hublink.cloud.answers`,
the token and clock checks in :mod:`hublink.cloud.token`. Every failure
leaves as an error of :mod:`hublink.errors`; secrets are never shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import SecretStr

from hublink import __version__
from hublink.clock import clock_skew, parse_http_date
from hublink.cloud.answers import PublicKey, Refreshed, Registration, Reply, Tokens, parse_reply
from hublink.cloud.retrying import client_timeout, rest_retrying
from hublink.config import Settings
from hublink.errors import (
    CloudAuthError,
    CloudError,
    CloudUnreachableError,
    SessionExpiredError,
)
from hublink.logs import register_secret
from hublink.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    certificate_failure,
    describe_tls_failure,
    describe_transient,
    is_transient_status,
    status_of,
)
from hublink.tls import ssl_context

log = structlog.get_logger(__name__)

USER_AGENT = f"hublink/{__version__}"
#: REST answers are small; a proxy's huge error page is cut here.
MAX_BODY = 1024 * 1024

LOGIN_PATH = "/api/auth/login/"
REFRESH_PATH = "/api/auth/refresh/"
PUBLIC_KEY_PATH = "/api/auth/public-key/"
REGISTER_PATH = "/api/hubs/register/"

# --- session and TLS ---------------------------------------------------------


def make_session(
    settings: Settings, *, policy: RetryPolicy = DEFAULT_POLICY
) -> aiohttp.ClientSession:
    """The process's one HTTP session; call it inside the running loop, close it at the end.

    ``trust_env`` makes it honour ``HTTPS_PROXY`` and ``NO_PROXY``.
    """
    connector = aiohttp.TCPConnector(ssl=ssl_context(settings))
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": USER_AGENT},
        timeout=client_timeout(policy, 0.0),
        trust_env=True,
    )


# --- the client --------------------------------------------------------------


class CloudClient:
    """Calls the Cloud's REST API through a shared session.

    Args:
        session: from :func:`make_session`; the client never closes it.
        settings: for ``cloud_url``.
        policy: retries and timeouts; tests pass a quick one.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.session = session
        self.base_url = settings.cloud_url.rstrip("/")
        self.policy = policy
        #: The last ``Date`` header the Cloud sent, parsed.
        self.server_date: datetime | None = None
        #: Cloud clock minus local clock, in seconds, from the last ``Date`` header.
        self.clock_skew: float | None = None

    def url(self, path: str) -> str:
        """The absolute URL of an API path."""
        return self.base_url + path

    def server_now(self) -> float:
        """The current time by the Cloud's clock when known, else by the local one."""
        return time.time() + (self.clock_skew or 0.0)

    async def login(self, email: str, password: SecretStr) -> Tokens:
        """Trade the owner's email and password for JWTs.

        Raises:
            CloudAuthError: the Cloud refused the credentials (400/401), or the
                account may not log in (403: disabled, locked).
        """
        register_secret(password.get_secret_value())
        payload = {"email": email, "password": password.get_secret_value()}
        reply = await self.request("POST", LOGIN_PATH, json=payload, what="log in")
        if reply.status in (400, 401, 403):
            raise CloudAuthError(
                f"the Cloud refused the login of {email}: {reply.error_message() or reply.reason}",
                hint="check the email and password of the owner's Cloud account",
                status=reply.status,
            )
        tokens = parse_reply(reply, Tokens, what="log in")
        _register_tokens(tokens.access, tokens.refresh)
        return tokens

    async def refresh(self, refresh: SecretStr) -> Tokens:
        """A fresh access token (and refresh token, if the Cloud rotates them).

        Raises:
            SessionExpiredError: the refresh token was refused (401): log in again.
        """
        payload = {"refresh": refresh.get_secret_value()}
        reply = await self.request("POST", REFRESH_PATH, json=payload, what="refresh the login")
        if reply.status == 401:
            raise SessionExpiredError(
                "the Cloud no longer accepts this login session "
                f"({reply.error_message() or reply.reason})",
                hint="run `hublink register` again to log in afresh",
                status=401,
            )
        fresh = parse_reply(reply, Refreshed, what="refresh the login")
        _register_tokens(fresh.access, fresh.refresh)
        return Tokens(access=fresh.access, refresh=fresh.refresh or refresh)

    async def public_key(self) -> PublicKey:
        """The PEM key that signs the Cloud's access tokens."""
        reply = await self.request("GET", PUBLIC_KEY_PATH, what="fetch the Cloud's public key")
        return parse_reply(reply, PublicKey, what="fetch the Cloud's public key")

    async def register(self, tokens: Tokens, name: str, address: str) -> Registration:
        """Create the hub on the Cloud; a 401 refreshes the access token once and retries.

        Raises:
            SessionExpiredError: the refresh was refused; log in again.
            CloudAuthError: the owner's tokens were refused even after a refresh.
            CloudResponseError: any other refusal, with the Cloud's words.
        """
        payload = {"name": name, "address": address}
        what = "register the hub"
        reply = await self.request(
            "POST", REGISTER_PATH, json=payload, bearer=tokens.access, what=what
        )
        if reply.status == 401:
            log.info("access token refused, refreshing it once")
            tokens = await self.refresh(tokens.refresh)
            reply = await self.request(
                "POST", REGISTER_PATH, json=payload, bearer=tokens.access, what=what
            )
            if reply.status == 401:
                raise CloudAuthError(
                    f"the Cloud refused the owner's login even after refreshing it: "
                    f"{reply.error_message() or reply.reason}",
                    hint="check that the account may register hubs, then run register again",
                    status=401,
                )
        return parse_reply(reply, Registration, what=what)

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        headers: Mapping[str, str] | None = None,
        bearer: SecretStr | None = None,
        policy: RetryPolicy | None = None,
    ) -> Reply:
        """Send one request, retrying transient failures; return any non-transient answer.

        4xx answers are returned, not raised: the caller knows what they mean
        (pass the reply to :func:`parse_reply` or :func:`raise_for_reply`).
        ``body`` is a factory called once per attempt, so a streamed upload
        starts afresh on a retry. ``what`` completes "could not …" in messages.

        Raises:
            CloudUnreachableError: no usable answer within the policy's
                attempts and deadline, or the TLS certificate does not verify.
            CloudError: any other transport failure (a proxy refusing, …).
        """
        policy = policy or self.policy
        url = self.url(path)
        sent_headers = dict(headers or {})
        if bearer is not None:
            sent_headers["Authorization"] = f"Bearer {bearer.get_secret_value()}"
        started = time.monotonic()
        retrying = rest_retrying(policy)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(
                        method,
                        url,
                        json=json,
                        data=body() if body is not None else None,
                        headers=sent_headers,
                        client_timeout=client_timeout(policy, time.monotonic() - started),
                    )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise self._transport_error(
                err, what, attempts=attempts, elapsed=time.monotonic() - started
            ) from err
        raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        data: Any,
        headers: Mapping[str, str],
        client_timeout: aiohttp.ClientTimeout,
    ) -> Reply:
        started = time.monotonic()
        async with self.session.request(
            method,
            url,
            json=json,
            data=data,
            headers=headers,
            timeout=client_timeout,
            # A redirect would turn a POST into a GET and could carry the
            # Authorization header elsewhere; it is reported instead.
            allow_redirects=False,
        ) as resp:
            body = await _read_limited(resp, MAX_BODY)
            self._note_date(resp.headers)
            log.debug(
                "cloud request",
                method=method,
                url=url,
                status=resp.status,
                ms=round((time.monotonic() - started) * 1000),
            )
            reply = Reply(resp.status, resp.reason or "", resp.headers, body, url)
            if is_transient_status(resp.status):
                raise aiohttp.ClientResponseError(
                    resp.request_info,
                    resp.history,
                    status=resp.status,
                    message=reply.error_message() or (resp.reason or ""),
                    headers=resp.headers,
                )
            return reply

    def _note_date(self, headers: Mapping[str, str]) -> None:
        server = parse_http_date(headers.get("Date"))
        if server is None:
            return
        self.server_date = server
        self.clock_skew = clock_skew(server)

    def _transport_error(
        self, err: BaseException, what: str, *, attempts: int, elapsed: float
    ) -> CloudError:
        host = _host_port(self.base_url)
        tls_reason = describe_tls_failure(err)
        if tls_reason is not None and certificate_failure(err) is not None:
            return CloudUnreachableError(
                f"could not {what}: the TLS certificate of {host} cannot be verified "
                f"({tls_reason})",
                hint="if the Cloud or a TLS-inspecting proxy uses a private CA, set tls.ca_file "
                "to its CA bundle (PEM); also check this machine's date and time",
            )
        if tls_reason is not None:
            return CloudUnreachableError(
                f"could not {what}: the TLS handshake with {host} failed ({tls_reason})",
                hint="check cloud_url (is it really https on that port?) and tls.ca_file",
            )
        if isinstance(err, aiohttp.ClientHttpProxyError):
            return CloudError(
                f"could not {what}: the HTTP proxy refused the connection to {host} "
                f"(HTTP {err.status} {err.message})",
                hint="check HTTPS_PROXY / NO_PROXY and the proxy's credentials",
                status=err.status,
            )
        status = status_of(err)
        tried = f"{attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.1f} s"
        if status is not None:
            return CloudUnreachableError(
                f"could not {what}: the Cloud at {self.base_url} is not available "
                f"({describe_transient(err)}; {tried})",
                hint="the Cloud may be overloaded or down for maintenance; try again later",
                status=status,
            )
        return CloudUnreachableError(
            f"could not {what}: the Cloud at {self.base_url} is unreachable "
            f"({describe_transient(err)}; {tried})",
            hint="check the network, DNS and cloud_url; behind a proxy, set HTTPS_PROXY",
        )


def _register_tokens(*tokens: SecretStr | None) -> None:
    for token in tokens:
        if token is not None:
            register_secret(token.get_secret_value())


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"
