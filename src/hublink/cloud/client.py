"""The Cloud's REST API (contract section 1), seen from the hub.

    make_session(settings)            the process's one aiohttp session
    ssl_context(settings)             system CAs plus ``tls.ca_file``
    CloudClient(session, settings)
      .login / .refresh / .public_key / .register   typed, validated answers
      .request(...)                   any other call: retries and error mapping
      .clock_skew / .server_now()     what the Cloud's ``Date`` header says
    verify_access_token(...)          RS256 signature and expiry, on the Cloud's clock

Every answer is validated by a pydantic model: strict about what hublink
needs, blind to fields it does not know. Every failure leaves as an error of
:mod:`hublink.errors`; the Cloud's own words are shown, secrets never are.
"""

from __future__ import annotations

import html
import json as jsonlib
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from hublink import __version__
from hublink.config import Settings
from hublink.errors import (
    CloudAuthError,
    CloudError,
    CloudResponseError,
    CloudUnreachableError,
    SessionExpiredError,
)
from hublink.logs import mask_text, register_secret
from hublink.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    describe_transient,
    is_transient_status,
    rest_retrying,
    status_of,
)
from hublink.tls import ssl_context

log = structlog.get_logger(__name__)

USER_AGENT = f"hublink/{__version__}"
#: JWT checks tolerate this much difference between clocks; beyond it the
#: local clock is reported as wrong (boxes without a real-time clock).
CLOCK_SKEW_LIMIT = 60.0
#: REST answers are small; a proxy's huge error page is cut here.
MAX_BODY = 1024 * 1024
#: How much of the Cloud's error text a message shows.
MAX_SHOWN = 300

LOGIN_PATH = "/api/auth/login/"
REFRESH_PATH = "/api/auth/refresh/"
PUBLIC_KEY_PATH = "/api/auth/public-key/"
REGISTER_PATH = "/api/hubs/register/"

_M = TypeVar("_M", bound=BaseModel)


# --- answers -----------------------------------------------------------------


class _Answer(BaseModel):
    """A Cloud answer: unknown fields are ignored, nothing is written back."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Answer):
    """The owner, as login describes them (optional: SimpleJWT omits it)."""

    id: int | str | None = None
    email: str | None = None


class Tokens(_Answer):
    """The owner's JWTs: in memory only, for the few seconds enrollment takes."""

    access: SecretStr = Field(min_length=1)
    refresh: SecretStr = Field(min_length=1)
    user: User | None = None

    @field_validator("user", mode="before")
    @classmethod
    def _ignore_odd_user(cls, value: Any) -> Any:
        # hublink never needs the user; an odd shape is no reason to fail.
        return value if isinstance(value, dict) else None


class _Refreshed(_Answer):
    access: SecretStr = Field(min_length=1)
    refresh: SecretStr | None = None  # absent unless the Cloud rotates refresh tokens


class PublicKey(_Answer):
    """The key that signs the Cloud's access tokens."""

    public_key: StrictStr = Field(min_length=1)
    algorithm: StrictStr = "RS256"


class Registration(_Answer):
    """What ``register`` gives the hub: its identity and tunnel credential."""

    hub_id: UUID
    slug: StrictStr = Field(min_length=1, max_length=200)
    tunnel_port: StrictInt = Field(ge=1, le=65535)
    tunnel_token: SecretStr = Field(min_length=1)


#: Fields whose values never appear in a message, even when they are wrong.
_SECRET_FIELDS = frozenset({"access", "refresh", "tunnel_token", "password"})


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full (REST answers are small)."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status <= 299

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def error_message(self) -> str:
        """The useful part of an error body: ``detail``, field errors, or an HTML title."""
        return describe_error_body(self.content_type, self.body)


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
        timeout=policy.timeout(0.0),
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
        fresh = parse_reply(reply, _Refreshed, what="refresh the login")
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
                        client_timeout=policy.timeout(time.monotonic() - started),
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
        raw = headers.get("Date")
        if not raw:
            return
        try:
            server = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return
        if server.tzinfo is None:
            return  # not an HTTP date (those are always GMT)
        self.server_date = server
        self.clock_skew = server.timestamp() - time.time()

    def _transport_error(
        self, err: BaseException, what: str, *, attempts: int, elapsed: float
    ) -> CloudError:
        host = _host_port(self.base_url)
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            reason = getattr(err.certificate_error, "verify_message", "") or str(
                err.certificate_error
            )
            return CloudUnreachableError(
                f"could not {what}: the TLS certificate of {host} cannot be verified ({reason})",
                hint="if the Cloud or a TLS-inspecting proxy uses a private CA, set tls.ca_file "
                "to its CA bundle (PEM); also check this machine's date and time",
            )
        if isinstance(err, aiohttp.ClientSSLError | ssl.SSLError):
            return CloudUnreachableError(
                f"could not {what}: the TLS handshake with {host} failed ({err})",
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


# --- reading answers -----------------------------------------------------------


def raise_for_reply(reply: Reply, *, what: str) -> None:
    """Raise :class:`CloudResponseError` with the Cloud's own words unless ``reply`` is 2xx."""
    if reply.ok:
        return
    if 300 <= reply.status <= 399:
        target = reply.headers.get("Location", "somewhere else")
        raise CloudResponseError(
            f"could not {what}: the Cloud redirected to {target} (HTTP {reply.status})",
            hint="set cloud_url to the Cloud's real address (https://, no path)",
            status=reply.status,
        )
    message = reply.error_message()
    raise CloudResponseError(
        f"could not {what}: the Cloud answered HTTP {reply.status} {reply.reason}"
        + (f": {message}" if message else ""),
        hint="the message above is the Cloud's; fix what it names and try again",
        status=reply.status,
    )


def parse_reply(reply: Reply, model: type[_M], *, what: str) -> _M:
    """Validate a 2xx answer into ``model``, or raise a clear :class:`CloudResponseError`."""
    raise_for_reply(reply, what=what)
    hint = (
        "nothing was saved; a proxy or captive portal may be answering for the Cloud, "
        "or the Cloud runs an incompatible version: check cloud_url"
    )
    try:
        data = jsonlib.loads(reply.body)
    except ValueError:
        if _looks_like_html(reply.content_type, reply.body):
            shown = _html_message(reply.body.decode("utf-8", "replace"))
            found = f"an HTML page ({shown})" if shown else "an HTML page"
        else:
            found = f"a body that is not JSON (Content-Type {reply.content_type or 'missing'})"
        raise CloudResponseError(
            f"could not {what}: the Cloud answered HTTP {reply.status} with {found}",
            hint=hint,
            status=reply.status,
        ) from None
    if not isinstance(data, dict):
        raise CloudResponseError(
            f"could not {what}: the Cloud answered a JSON {type(data).__name__}, not an object",
            hint=hint,
            status=reply.status,
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise CloudResponseError(
            f"could not {what}: the Cloud's answer lacks what hublink needs:\n"
            + describe_answer_error(err),
            hint=hint,
            status=reply.status,
        ) from None


def describe_answer_error(err: ValidationError) -> str:
    """One line per bad field; the values of secret fields are never shown."""
    lines = []
    for problem in err.errors(include_url=False):
        loc = ".".join(str(part) for part in problem["loc"]) or "(answer)"
        if problem["type"] == "missing":
            lines.append(f"  {loc}: missing")
            continue
        if any(str(part) in _SECRET_FIELDS for part in problem["loc"]):
            lines.append(f"  {loc}: {problem['msg']}")
            continue
        shown = repr(problem.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        lines.append(f"  {loc} = {mask_text(shown)}: {problem['msg']}")
    return "\n".join(lines)


def describe_error_body(content_type: str, body: bytes) -> str:
    """The useful part of an error body, short and with secrets masked."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if "json" in content_type or text.startswith(("{", "[")):
        try:
            message = _json_message(jsonlib.loads(text))
        except ValueError:
            message = text
    elif _looks_like_html(content_type, body):
        message = _html_message(text)
    else:
        message = text
    return _truncate(mask_text(" ".join(message.split())))


def _json_message(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            if key in data:
                return _json_message(data[key])
        # Django REST Framework's field errors: {"name": ["This field is required."]}
        return "; ".join(f"{key}: {_json_message(value)}" for key, value in data.items())
    if isinstance(data, list):
        return " ".join(_json_message(item) for item in data)
    return str(data)


def _looks_like_html(content_type: str, body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return "html" in content_type or head.startswith((b"<!doctype", b"<html"))


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_H1 = re.compile(r"<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _html_message(text: str) -> str:
    def clean(fragment: str) -> str:
        return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())

    title = _TITLE.search(text)
    heading = _H1.search(text)
    parts = [clean(m.group(1)) for m in (title, heading) if m is not None]
    parts = [p for p in parts if p]
    if len(parts) == 2 and (parts[1] in parts[0] or parts[0] in parts[1]):
        parts = [max(parts, key=len)]
    if parts:
        return _truncate(": ".join(parts))
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", text, flags=re.IGNORECASE | re.DOTALL)
    return _truncate(clean(body))


def _truncate(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the access token and the clock -------------------------------------------


def verify_access_token(
    token: SecretStr, key: PublicKey, *, now: float, leeway: float = CLOCK_SKEW_LIMIT
) -> dict[str, Any]:
    """Check the token's RS256 signature and its expiry at ``now`` (the Cloud's clock if known).

    pyjwt would judge expiry by the local clock, which on a box without a
    real-time clock may be years off; so the time claims are checked here.

    Raises:
        CloudResponseError: wrong algorithm, unusable key, bad signature, or
            a token already expired (or not yet valid) at ``now``.
    """
    if key.algorithm.upper() != "RS256":
        raise CloudResponseError(
            f"the Cloud signs its tokens with {key.algorithm}; hublink expects RS256",
            hint="check cloud_url: this does not look like the Cloud hublink knows",
        )
    # pyjwt pulls in cryptography (~8 MiB): only enrollment needs it, not the daemon.
    import jwt

    hint = "check cloud_url: a proxy or another server may be answering in the Cloud's place"
    try:
        claims: dict[str, Any] = jwt.decode(
            token.get_secret_value(),
            key.public_key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise CloudResponseError(
            "the Cloud's access token does not match its public key", hint=hint
        ) from None
    except (jwt.InvalidKeyError, ValueError, TypeError) as err:
        # pyjwt raises plain ValueError for a PEM that cryptography cannot read.
        raise CloudResponseError(
            f"the Cloud's public key is not a usable RSA key ({type(err).__name__})", hint=hint
        ) from None
    except jwt.PyJWTError as err:
        raise CloudResponseError(
            f"the Cloud's access token is not a valid RS256 JWT ({err})", hint=hint
        ) from None
    _check_time_claims(claims, now=now, leeway=leeway)
    return claims


def _check_time_claims(claims: Mapping[str, Any], *, now: float, leeway: float) -> None:
    hint = "check this machine's clock and the Cloud's; tokens are judged by the Cloud's clock"
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp + leeway < now:
        raise CloudResponseError(
            f"the Cloud's access token had already expired when it arrived ({now - exp:.0f} s ago)",
            hint=hint,
        )
    for claim in ("nbf", "iat"):
        value = claims.get(claim)
        if isinstance(value, int | float) and value - leeway > now:
            raise CloudResponseError(
                f"the Cloud's access token is not valid yet ({claim} is {value - now:.0f} s ahead)",
                hint=hint,
            )


def describe_clock_skew(skew: float | None, *, limit: float = CLOCK_SKEW_LIMIT) -> str | None:
    """A plain warning when this machine's clock is more than ``limit`` seconds off the Cloud's."""
    if skew is None or abs(skew) <= limit:
        return None
    direction = "behind" if skew > 0 else "ahead of"
    return (
        f"this machine's clock is {_duration(abs(skew))} {direction} the Cloud's; "
        "TLS certificates and login tokens depend on the right time. Turn on time "
        "synchronisation (e.g. `timedatectl set-ntp true`) or set the clock"
    )


def _duration(seconds: float) -> str:
    # The Date header has a one-second resolution: "2 h 1 s" would be noise.
    grain = 3600 if seconds >= 86400 else 60 if seconds >= 3600 else 1
    seconds = round(seconds / grain) * grain
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts = []
    for name, size in units:
        if seconds >= size:
            parts.append(f"{seconds // size} {name}")
            seconds %= size
    return " ".join(parts[:2]) or "0 s"
