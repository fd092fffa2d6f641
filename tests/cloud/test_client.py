"""The Cloud REST client against real local servers: answers, failures, retries, TLS, proxy."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from pydantic import SecretStr

from hublink import __version__
from hublink.cloud import (
    LOGIN_PATH,
    PUBLIC_KEY_PATH,
    REFRESH_PATH,
    REGISTER_PATH,
    CloudClient,
    PublicKey,
    Tokens,
    describe_clock_skew,
    describe_error_body,
    make_session,
    verify_access_token,
)
from hublink.config import Settings
from hublink.devcloud.ports import free_port
from hublink.errors import (
    EXIT_NOPERM,
    EXIT_UNAVAILABLE,
    CloudAuthError,
    CloudError,
    CloudResponseError,
    CloudUnreachableError,
    ConfigError,
    SessionExpiredError,
)
from hublink.retry import RetryPolicy
from hublink.tls import ssl_context
from support.scripted_cloud import (
    Canned,
    ScriptedCloud,
    Signer,
    get_shared_signer,
    make_registration,
)

#: Retries that finish in well under a second.
QUICK = RetryPolicy(attempts=4, deadline=5.0, backoff_base=0.01, backoff_max=0.05)
PASSWORD = SecretStr("correct horse battery")


@pytest.fixture
async def client(scripted_cloud: ScriptedCloud) -> AsyncIterator[CloudClient]:
    settings = Settings(cloud_url=scripted_cloud.url)
    async with make_session(settings, policy=QUICK) as session:
        yield CloudClient(session, settings, policy=QUICK)


def tokens(signer: Signer) -> Tokens:
    return Tokens(access=SecretStr(signer.token()), refresh=SecretStr(signer.token(kind="refresh")))


# --- login -----------------------------------------------------------------------


async def test_login_returns_tokens_and_sends_user_agent(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    scripted_cloud.on("POST", LOGIN_PATH, signer.login_answer())
    got = await client.login("owner@example.com", PASSWORD)
    assert got.user is not None and got.user.email == "owner@example.com"
    (seen,) = scripted_cloud.requests_to(LOGIN_PATH)
    assert seen.headers["User-Agent"] == f"hublink/{__version__}"
    assert seen.json() == {"email": "owner@example.com", "password": PASSWORD.get_secret_value()}
    # The tokens are secrets: their repr shows nothing.
    assert got.access.get_secret_value() not in repr(got)


async def test_login_without_user_object_like_simplejwt(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    scripted_cloud.on("POST", LOGIN_PATH, signer.login_answer(with_user=False))
    got = await client.login("owner@example.com", PASSWORD)
    assert got.user is None


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (
            401,
            {"detail": "No active account found with the given credentials"},
            "No active account",
        ),
        (400, {"password": ["This field may not be blank."]}, "password: This field may not"),
        (403, {"detail": "This account is disabled."}, "account is disabled"),
    ],
)
async def test_wrong_credentials_are_an_auth_error_and_not_retried(
    scripted_cloud: ScriptedCloud, client: CloudClient, status: int, body: Any, shown: str
) -> None:
    scripted_cloud.on("POST", LOGIN_PATH, Canned(status=status, json=body))
    with pytest.raises(CloudAuthError) as caught:
        await client.login("owner@example.com", PASSWORD)
    assert caught.value.exit_code == EXIT_NOPERM
    assert shown in str(caught.value)
    assert PASSWORD.get_secret_value() not in str(caught.value)
    assert len(scripted_cloud.requests_to(LOGIN_PATH)) == 1


# --- retries -----------------------------------------------------------------------


async def test_503_twice_then_success(scripted_cloud: ScriptedCloud, client: CloudClient) -> None:
    signer = get_shared_signer()
    unavailable = Canned(status=503, json={"detail": "maintenance"})
    scripted_cloud.on("POST", LOGIN_PATH, unavailable, unavailable, signer.login_answer())
    await client.login("owner@example.com", PASSWORD)
    assert len(scripted_cloud.requests_to(LOGIN_PATH)) == 3


async def test_persistent_503_is_unreachable_with_the_clouds_words(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    scripted_cloud.on(
        "GET", PUBLIC_KEY_PATH, Canned(status=503, json={"detail": "down for upgrade"})
    )
    with pytest.raises(CloudUnreachableError) as caught:
        await client.public_key()
    assert caught.value.exit_code == EXIT_UNAVAILABLE
    assert "HTTP 503" in str(caught.value) and "down for upgrade" in str(caught.value)
    assert len(scripted_cloud.requests_to(PUBLIC_KEY_PATH)) == QUICK.attempts


async def test_retry_after_is_honoured_as_a_minimum_wait(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    busy = Canned(status=429, json={"detail": "slow down"}, headers={"Retry-After": "1"})
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, busy, signer.public_key_answer())
    started = time.monotonic()
    await client.public_key()
    # QUICK's own backoff is at most 0.05 s; only Retry-After explains a full second.
    assert time.monotonic() - started >= 1.0


async def test_other_4xx_are_shown_verbatim_and_never_retried(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    scripted_cloud.on(
        "POST",
        REGISTER_PATH,
        Canned(status=409, json={"detail": "No tunnel ports left (7001-7100 all in use)"}),
    )
    with pytest.raises(CloudResponseError) as caught:
        await client.register(tokens(signer), "Shop", "Main St 1")
    assert "HTTP 409" in str(caught.value)
    assert "No tunnel ports left (7001-7100 all in use)" in str(caught.value)
    assert len(scripted_cloud.requests_to(REGISTER_PATH)) == 1


async def test_html_error_page_from_a_proxy_shows_its_title(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    page = (
        "<!DOCTYPE html><html><head><title>403 Forbidden</title><style>h1{}</style></head>"
        "<body><h1>Access denied by corporate proxy</h1><p>" + "x" * 5000 + "</p></body></html>"
    )
    scripted_cloud.on(
        "POST", REGISTER_PATH, Canned(status=403, text=page, content_type="text/html")
    )
    with pytest.raises(CloudResponseError) as caught:
        await client.register(tokens(get_shared_signer()), "Shop", "")
    message = str(caught.value)
    assert "403 Forbidden: Access denied by corporate proxy" in message
    assert "xxxxxxxx" not in message and "<" not in message.split("hint:", maxsplit=1)[0]


async def test_html_502_from_a_proxy_is_retried_then_unreachable(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
    scripted_cloud.on("POST", LOGIN_PATH, Canned(status=502, text=page, content_type="text/html"))
    with pytest.raises(CloudUnreachableError) as caught:
        await client.login("owner@example.com", PASSWORD)
    assert "502 Bad Gateway" in str(caught.value)
    assert "<title>" not in str(caught.value)


async def test_redirect_is_reported_not_followed(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    scripted_cloud.on(
        "POST",
        LOGIN_PATH,
        Canned(
            status=301, text="", headers={"Location": "https://www.erplora.com/api/auth/login/"}
        ),
    )
    with pytest.raises(CloudResponseError, match=r"redirected to https://www\.erplora\.com"):
        await client.login("owner@example.com", PASSWORD)
    assert len(scripted_cloud.seen) == 1


# --- validation of answers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (make_registration(tunnel_token=None), "tunnel_token: missing"),
        (make_registration(hub_id="hub-42"), "hub_id = 'hub-42'"),
        (make_registration(tunnel_port=70000), "tunnel_port = 70000"),
        (make_registration(tunnel_port=0), "tunnel_port = 0"),
        (make_registration(tunnel_port="7001"), "tunnel_port = '7001'"),
        (make_registration(slug=""), "slug = ''"),
        (make_registration(tunnel_token=""), "tunnel_token: "),
    ],
)
async def test_invalid_registration_is_a_clear_error(
    scripted_cloud: ScriptedCloud, client: CloudClient, answer: dict[str, Any], expected: str
) -> None:
    scripted_cloud.on("POST", REGISTER_PATH, Canned(status=201, json=answer))
    with pytest.raises(CloudResponseError) as caught:
        await client.register(tokens(get_shared_signer()), "Shop", "")
    message = str(caught.value)
    assert expected in message
    assert "nothing was saved" in message
    assert "x" * 40 not in message  # the token's value never shows


async def test_unknown_fields_are_ignored(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    answer = make_registration(frps_addr="frp.example.com", plan={"tier": "pro"})
    scripted_cloud.on("POST", REGISTER_PATH, Canned(status=201, json=answer))
    got = await client.register(tokens(get_shared_signer()), "Shop", "")
    assert str(got.hub_id) == answer["hub_id"]
    assert got.tunnel_port == 7001


async def test_a_200_html_page_is_an_error_not_a_crash(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    portal = "<html><head><title>Hotel WiFi - please log in</title></head><body></body></html>"
    scripted_cloud.on("POST", LOGIN_PATH, Canned(status=200, text=portal, content_type="text/html"))
    with pytest.raises(CloudResponseError, match=r"HTML page \(Hotel WiFi - please log in\)"):
        await client.login("owner@example.com", PASSWORD)


async def test_a_json_list_is_an_error(scripted_cloud: ScriptedCloud, client: CloudClient) -> None:
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, Canned(json=["not", "an", "object"]))
    with pytest.raises(CloudResponseError, match="JSON list, not an object"):
        await client.public_key()


async def test_a_wrong_type_for_the_access_token_never_shows_its_value(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    scripted_cloud.on("POST", LOGIN_PATH, Canned(json={"access": 12345678901, "refresh": "r" * 30}))
    with pytest.raises(CloudResponseError) as caught:
        await client.login("owner@example.com", PASSWORD)
    assert "access" in str(caught.value)
    assert "12345678901" not in str(caught.value)


# --- register and refresh -------------------------------------------------------------


async def test_register_401_refreshes_once_and_retries(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    old = tokens(signer)
    fresh_access = signer.token(now=time.time() + 1)
    scripted_cloud.on(
        "POST",
        REGISTER_PATH,
        Canned(status=401, json={"detail": "Given token not valid for any token type"}),
        Canned(status=201, json=make_registration()),
    )
    scripted_cloud.on("POST", REFRESH_PATH, Canned(json={"access": fresh_access}))
    got = await client.register(old, "Shop", "Main St 1")
    assert got.slug == "corner-shop"
    first, second = scripted_cloud.requests_to(REGISTER_PATH)
    assert first.headers["Authorization"] == f"Bearer {old.access.get_secret_value()}"
    assert second.headers["Authorization"] == f"Bearer {fresh_access}"
    (refresh,) = scripted_cloud.requests_to(REFRESH_PATH)
    assert refresh.json() == {"refresh": old.refresh.get_secret_value()}
    assert first.json() == {"name": "Shop", "address": "Main St 1"}


async def test_register_401_after_refresh_is_an_auth_error(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    scripted_cloud.on("POST", REGISTER_PATH, Canned(status=401, json={"detail": "nope"}))
    scripted_cloud.on("POST", REFRESH_PATH, Canned(json={"access": signer.token()}))
    with pytest.raises(CloudAuthError):
        await client.register(tokens(signer), "Shop", "")
    assert len(scripted_cloud.requests_to(REGISTER_PATH)) == 2
    assert len(scripted_cloud.requests_to(REFRESH_PATH)) == 1


async def test_refused_refresh_says_to_log_in_again(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    scripted_cloud.on(
        "POST", REFRESH_PATH, Canned(status=401, json={"detail": "Token is blacklisted"})
    )
    with pytest.raises(SessionExpiredError, match="Token is blacklisted") as caught:
        await client.refresh(SecretStr("r" * 30))
    assert caught.value.exit_code == EXIT_NOPERM


# --- unreachable, slow --------------------------------------------------------------


async def test_connection_refused_is_unreachable_within_the_deadline() -> None:
    settings = Settings(cloud_url=f"http://127.0.0.1:{free_port()}")
    policy = RetryPolicy(attempts=50, deadline=1.0, backoff_base=0.05, backoff_max=0.2)
    async with make_session(settings) as session:
        client = CloudClient(session, settings, policy=policy)
        started = time.monotonic()
        with pytest.raises(CloudUnreachableError) as caught:
            await client.public_key()
    assert time.monotonic() - started < 3.0
    assert "unreachable" in str(caught.value)
    assert "cannot connect" in str(caught.value)


async def test_slow_cloud_times_out_with_a_clear_error(scripted_cloud: ScriptedCloud) -> None:
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, Canned(json={}, delay=5))
    settings = Settings(cloud_url=scripted_cloud.url)
    policy = RetryPolicy(attempts=2, deadline=1.0, request_timeout=0.3, backoff_base=0.01)
    async with make_session(settings) as session:
        client = CloudClient(session, settings, policy=policy)
        started = time.monotonic()
        with pytest.raises(CloudUnreachableError, match="timed out; 2 attempts"):
            await client.public_key()
    assert time.monotonic() - started < 3.0  # the Cloud would have taken 5 s


async def test_deadline_cuts_a_slow_attempt_short(scripted_cloud: ScriptedCloud) -> None:
    scripted_cloud.on("GET", PUBLIC_KEY_PATH, Canned(json={}, delay=5))
    settings = Settings(cloud_url=scripted_cloud.url)
    # The per-attempt timeout alone would allow 3 s; the 0.5 s deadline wins.
    policy = RetryPolicy(attempts=5, deadline=0.5, request_timeout=3.0)
    async with make_session(settings) as session:
        started = time.monotonic()
        with pytest.raises(CloudUnreachableError):
            await CloudClient(session, settings, policy=policy).public_key()
    assert time.monotonic() - started < 3.0  # the Cloud would have taken 5 s


# --- clock ---------------------------------------------------------------------------


async def test_clock_skew_is_measured_from_the_date_header(
    scripted_cloud: ScriptedCloud, client: CloudClient
) -> None:
    signer = get_shared_signer()
    cloud_time = time.time() - 7200
    scripted_cloud.on("POST", LOGIN_PATH, signer.login_answer(now=cloud_time))
    await client.login("owner@example.com", PASSWORD)
    assert client.clock_skew is not None
    assert abs(client.clock_skew + 7200) < 5
    assert client.server_date is not None
    assert abs(client.server_date.timestamp() - cloud_time) < 5
    warning = describe_clock_skew(client.clock_skew)
    assert warning is not None and "2 h" in warning and "ahead of the Cloud's" in warning


def test_small_skew_is_not_reported() -> None:
    assert describe_clock_skew(None) is None
    assert describe_clock_skew(59.0) is None
    assert describe_clock_skew(-59.0) is None
    warning = describe_clock_skew(3 * 86400 + 60)
    assert warning is not None and "3 d behind" in warning
    warning = describe_clock_skew(-(2 * 3600 + 1))
    assert warning is not None and "2 h ahead of" in warning
    warning = describe_clock_skew(61.4)
    assert warning is not None and "1 min 1 s behind" in warning


# --- access token verification ---------------------------------------------------------


def key_of(signer: Signer) -> PublicKey:
    return PublicKey(public_key=signer.public_pem, algorithm="RS256")


def test_valid_token_verifies() -> None:
    signer = get_shared_signer()
    claims = verify_access_token(SecretStr(signer.token()), key_of(signer), now=time.time())
    assert claims["token_type"] == "access"


def test_token_signed_by_another_key_is_refused() -> None:
    with pytest.raises(CloudResponseError, match="does not match its public key"):
        verify_access_token(
            SecretStr(Signer().token()), key_of(get_shared_signer()), now=time.time()
        )


def test_expiry_is_judged_on_the_given_clock_with_leeway() -> None:
    signer = get_shared_signer()
    cloud_now = time.time() - 3 * 3600  # a box whose clock runs 3 h fast
    token = SecretStr(signer.token(now=cloud_now, lifetime=300))
    verify_access_token(token, key_of(signer), now=cloud_now)
    verify_access_token(token, key_of(signer), now=cloud_now + 300 + 59)
    with pytest.raises(CloudResponseError, match="already expired"):
        verify_access_token(token, key_of(signer), now=time.time())


def test_token_from_the_future_is_refused() -> None:
    signer = get_shared_signer()
    token = SecretStr(signer.token(now=time.time() + 600))
    with pytest.raises(CloudResponseError, match="not valid yet"):
        verify_access_token(token, key_of(signer), now=time.time())


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (PublicKey(public_key="not a pem", algorithm="RS256"), "not a usable RSA key"),
        (PublicKey(public_key="x", algorithm="HS256"), "expects RS256"),
    ],
)
def test_unusable_public_key(key: PublicKey, expected: str) -> None:
    with pytest.raises(CloudResponseError, match=expected):
        verify_access_token(SecretStr(get_shared_signer().token()), key, now=time.time())


def test_garbage_token_is_refused() -> None:
    with pytest.raises(CloudResponseError, match="not a valid RS256 JWT"):
        verify_access_token(SecretStr("garbage"), key_of(get_shared_signer()), now=time.time())


# --- error bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", {"detail": "Hub limit reached"}, "Hub limit reached"),
        ("application/json", {"name": ["required"], "address": ["too long"]}, "name: required; "),
        ("application/json", {"non_field_errors": ["bad"]}, "non_field_errors: bad"),
        ("text/plain", "Service temporarily down\n", "Service temporarily down"),
        ("application/json", {"detail": "see ?token=abcdefgh123 now"}, "?token=*** now"),
        ("text/plain", "", ""),
    ],
)
def test_describe_error_body(content_type: str, body: Any, expected: str) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert expected in describe_error_body(content_type, raw)


def test_long_error_bodies_are_truncated() -> None:
    text = describe_error_body("text/plain", b"word " * 1000)
    assert len(text) <= 300 and text.endswith("…")


# --- TLS and proxies ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_cloud(ca: trustme.CA) -> AsyncIterator[ScriptedCloud]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    cloud = ScriptedCloud(ssl_context=server_context)
    await cloud.start()
    cloud.on("GET", PUBLIC_KEY_PATH, get_shared_signer().public_key_answer())
    try:
        yield cloud
    finally:
        await cloud.stop()


async def test_untrusted_certificate_names_the_host_and_tls_ca_file(
    tls_cloud: ScriptedCloud,
) -> None:
    settings = Settings(cloud_url=tls_cloud.url)
    async with make_session(settings) as session:
        with pytest.raises(CloudError) as caught:
            await CloudClient(session, settings, policy=QUICK).public_key()
    message = str(caught.value)
    assert tls_cloud.url.removeprefix("https://") in message
    assert "certificate" in message and "tls.ca_file" in message
    assert tls_cloud.seen == []  # never got as far as HTTP, and was not retried into the ground


async def test_tls_ca_file_makes_the_certificate_trusted(
    tls_cloud: ScriptedCloud, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = Settings(cloud_url=tls_cloud.url, tls={"ca_file": ca_file})
    async with make_session(settings) as session:
        key = await CloudClient(session, settings, policy=QUICK).public_key()
    assert "BEGIN PUBLIC KEY" in key.public_key


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings(tls={"ca_file": tmp_path / "nope.pem"})
    with pytest.raises(ConfigError, match=r"tls\.ca_file"):
        ssl_context(settings)


async def test_http_proxy_from_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """trust_env: a request for a far-away Cloud goes to the proxy named in the environment."""
    asked: list[str] = []
    signer = get_shared_signer()

    async def proxy(request: web.Request) -> web.Response:
        asked.append(str(request.url))
        return web.json_response({"public_key": signer.public_pem, "algorithm": "RS256"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        port = runner.addresses[0][1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        settings = Settings(cloud_url="http://cloud.invalid", allow_insecure_http=True)
        async with make_session(settings) as session:
            await CloudClient(session, settings, policy=QUICK).public_key()
    finally:
        await runner.cleanup()
    assert asked == ["http://cloud.invalid/api/auth/public-key/"]


# --- the shared session ------------------------------------------------------------------


async def test_session_carries_user_agent_and_timeouts() -> None:
    settings = Settings()
    policy = RetryPolicy(connect_timeout=3.0, request_timeout=7.0)
    async with make_session(settings, policy=policy) as session:
        assert session.headers["User-Agent"] == f"hublink/{__version__}"
        assert session.timeout.connect == 3.0
        assert session.timeout.total == 7.0
        assert session.trust_env is True
