"""Each security rule of the page (contract section 9), proven against the app."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from hublink.errors import CloudAuthError
from hublink.statedir import WEB_CODE as CODE_FILE
from hublink.web import read_or_create_code
from hublink.web.code import MIN_LENGTH
from support.page import CONNECTED, FakeDaemon, fetch_csrf_token, find_csrf_token, make_origin, post

Client = TestClient[Any, Any]


# The setup code


def test_the_code_is_random_private_and_stable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = read_or_create_code(state)
    assert len(first) >= MIN_LENGTH
    assert stat.S_IMODE(os.stat(state / CODE_FILE).st_mode) == 0o600
    assert read_or_create_code(state) == first
    assert read_or_create_code(tmp_path / "other") != first
    assert [p.name for p in state.iterdir()] == [CODE_FILE]  # no temporary file left


def test_a_short_hand_edited_code_is_replaced(tmp_path: Path) -> None:
    (tmp_path / CODE_FILE).write_text("abc\n")
    assert len(read_or_create_code(tmp_path)) >= MIN_LENGTH


async def test_the_log_names_the_code_file_but_never_the_code(
    daemon: FakeDaemon, state_dir: Path
) -> None:
    from hublink.config import WebSettings
    from hublink.web import build_app

    with capture_logs() as logs:
        build_app(WebSettings(), daemon.actions(), state_dir)
    code = read_or_create_code(state_dir)
    assert any(str(state_dir / CODE_FILE) in str(entry) for entry in logs)
    assert not any(code in str(entry) for entry in logs)


# The lock


@pytest.mark.parametrize("path", ["/", "/api/status", "/nothing-here", "/setup"])
async def test_before_the_code_only_the_code_form_is_served(client: Client, path: str) -> None:
    response = await client.get(path)
    text = await response.text()
    if path.startswith("/api/"):
        assert response.status == 401
        assert (await response.json())["error"].startswith("locked")
    else:
        assert response.status in (200, 401)
        assert 'name="code"' in text and 'action="/unlock"' in text
        assert "main-street" not in text and 'name="password"' not in text


async def test_locked_posts_do_nothing(client: Client, daemon: FakeDaemon) -> None:
    token = await fetch_csrf_token(client)
    response = await post(client, "/backup", token=token)
    assert response.status == 401
    assert daemon.backups == 0


async def test_opening_the_url_with_the_code_unlocks_and_drops_it(
    client: Client, code: str
) -> None:
    response = await client.get(f"/?code={code}", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and code not in cookie
    assert (await client.get("/api/status")).status == 200


async def test_the_code_form_unlocks_with_a_fresh_session(client: Client, code: str) -> None:
    await client.get("/")
    before = client.session.cookie_jar.filter_cookies(client.make_url("/"))["hublink_session"]
    response = await post(client, "/unlock", {"code": code})
    assert response.status == 303
    after = client.session.cookie_jar.filter_cookies(client.make_url("/"))["hublink_session"]
    assert after.value != before.value
    assert (await client.get("/api/status")).status == 200


async def test_a_wrong_code_is_refused(client: Client) -> None:
    response = await post(client, "/unlock", {"code": "not-the-code"})
    assert response.status == 401
    assert "web-code" in await response.text()
    assert (await client.get("/api/status")).status == 401


async def test_the_session_id_is_random_per_visitor(client: Client) -> None:
    await client.get("/")
    first = client.session.cookie_jar.filter_cookies(client.make_url("/"))["hublink_session"]
    client.session.cookie_jar.clear()
    await client.get("/")
    second = client.session.cookie_jar.filter_cookies(client.make_url("/"))["hublink_session"]
    assert first.value != second.value and len(first.value) >= 32


# CSRF and Origin


async def test_a_post_without_the_csrf_token_is_refused(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.status_doc = dict(CONNECTED)
    response = await post(unlocked, "/backup", token="")
    assert response.status == 403
    response = await post(unlocked, "/backup", token="forged")
    assert response.status == 403
    assert daemon.backups == 0


async def test_the_csrf_token_is_tied_to_the_session(
    unlocked: Client, code: str, daemon: FakeDaemon
) -> None:
    daemon.status_doc = dict(CONNECTED)
    old_token = await fetch_csrf_token(unlocked)
    unlocked.session.cookie_jar.clear()
    await unlocked.get(f"/?code={code}")
    response = await post(unlocked, "/backup", token=old_token)
    assert response.status == 403
    assert daemon.backups == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "https://127.0.0.1"},
        {"Origin": ""},
        {"Referer": "http://evil.example/"},
    ],
)
async def test_a_post_from_another_origin_is_refused(
    unlocked: Client, daemon: FakeDaemon, headers: dict[str, str]
) -> None:
    daemon.status_doc = dict(CONNECTED)
    token = await fetch_csrf_token(unlocked)
    sent = {"csrf_token": token}
    response = await unlocked.post("/backup", data=sent, headers=headers, allow_redirects=False)
    assert response.status == 403
    assert daemon.backups == 0


async def test_a_post_without_origin_or_referer_is_refused(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    token = await fetch_csrf_token(unlocked)
    response = await unlocked.post("/backup", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 403


async def test_referer_of_the_page_stands_in_for_origin(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    token = await fetch_csrf_token(unlocked)
    response = await unlocked.post(
        "/backup",
        data={"csrf_token": token},
        headers={"Referer": make_origin(unlocked) + "/"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert daemon.backups == 1


# Host (DNS rebinding)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8002", "127.0.0.1.nip.io", "", "a b"]
)
async def test_a_foreign_host_name_is_refused(client: Client, host: str) -> None:
    response = await client.get("/", headers={"Host": host})
    assert response.status in (400, 421)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8002", "localhost:8002", "LOCALHOST", "[::1]:8002", "192.168.1.20", "[fe80::1]"],
)
async def test_ip_literals_and_localhost_are_served(client: Client, host: str) -> None:
    response = await client.get("/", headers={"Host": host})
    assert response.status == 200


async def test_the_box_hostname_is_served(client: Client) -> None:
    name = socket.gethostname()
    for host in (name, f"{name.split('.')[0]}.local"):
        assert (await client.get("/", headers={"Host": f"{host}:8002"})).status == 200


async def test_a_foreign_host_is_refused_even_when_unlocked(unlocked: Client) -> None:
    response = await unlocked.get("/api/status", headers={"Host": "rebound.example:8002"})
    assert response.status == 421


# Rate limits


async def test_wrong_codes_are_limited_to_five_a_minute(client: Client, code: str) -> None:
    for _ in range(5):
        assert (await client.get("/?code=wrong-code")).status == 401
    response = await client.get(f"/?code={code}")
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    response = await post(client, "/unlock", {"code": code})
    assert response.status == 429
    assert (await client.get("/api/status")).status == 401


async def test_wrong_passwords_are_limited_to_five_a_minute(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.register_error = CloudAuthError("wrong email or password", status=401)
    form = {"email": "owner@shop.example", "password": "nope", "name": "Shop"}
    for _ in range(5):
        assert (await post(unlocked, "/setup", form)).status == 401
    response = await post(unlocked, "/setup", form)
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert len(daemon.registrations) == 5


# Headers and secrets


async def test_every_answer_carries_the_security_headers(unlocked: Client) -> None:
    for path in ("/", "/api/status", "/static/page.css"):
        response = await unlocked.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        # Not no-referrer: chromium then sends "Origin: null" on a plain form post.
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await unlocked.get("/")).headers["Cache-Control"] == "no-store"


async def test_the_page_has_no_inline_script_or_style(unlocked: Client) -> None:
    for html in (await (await unlocked.get("/")).text(),):
        assert "<script>" not in html and "<style" not in html and "style=" not in html
        assert " on" + "click=" not in html


async def test_the_password_is_never_logged_or_sent_back(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    secret = "Tr0ub4dor&3-secret"
    daemon.register_error = CloudAuthError(f"refused {secret}", status=401)
    with capture_logs() as logs:
        response = await post(
            unlocked, "/setup", {"email": "o@shop.example", "password": secret, "name": "S"}
        )
        html = await response.text()
    assert secret not in html
    assert not any(secret in str(entry) for entry in logs)
    assert daemon.registrations[0].password.get_secret_value() == secret
    assert secret not in repr(daemon.registrations[0])


async def test_a_huge_body_is_refused_with_a_message(unlocked: Client) -> None:
    token = await fetch_csrf_token(unlocked)
    body = f"csrf_token={token}&name=" + "x" * 200_000
    response = await unlocked.post(
        "/setup",
        data=body.encode(),
        headers={
            "Origin": make_origin(unlocked),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status == 413
    assert "too large" in await response.text()


def test_csrf_of_finds_the_token() -> None:
    assert find_csrf_token('<input type="hidden" name="csrf_token" value="abc">') == "abc"
