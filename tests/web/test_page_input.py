"""Bad input in any field gets a clear message: never a 500, a traceback or the password."""

from __future__ import annotations

import asyncio
import copy
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from hublink.config import WebSettings
from hublink.errors import CloudAuthError, CloudResponseError, CloudUnreachableError
from hublink.web import build_app, read_or_create_code
from support.page import CONNECTED, FakeDaemon, fetch_csrf_token, make_origin

Client = TestClient[Any, Any]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def send(client: Client, body: bytes, **headers: str) -> tuple[int, str]:
    """POST a raw body to /setup with the page's token and origin."""
    token = await fetch_csrf_token(client)
    sent = {**FORM, "Origin": make_origin(client), **headers}
    response = await client.post(
        "/setup", data=f"csrf_token={token}&".encode() + body, headers=sent
    )
    return response.status, await response.text()


async def test_non_utf8_form_bytes_are_refused_in_plain_words(unlocked: Client) -> None:
    status, html = await send(unlocked, b"email=%ff%fe&password=x&name=%c3")
    assert status == 400 and "not valid UTF-8" in html


async def test_an_encoded_lone_surrogate_is_refused(unlocked: Client) -> None:
    status, html = await send(unlocked, b"email=a%ed%a0%80b@x.example&password=x&name=y")
    assert status == 400 and "not valid UTF-8" in html


async def test_raw_non_ascii_bytes_are_refused(unlocked: Client) -> None:
    status, html = await send(unlocked, b"name=\xff\xfe&email=x")
    assert status == 400 and "not valid UTF-8" in html


async def test_too_many_fields_are_refused(unlocked: Client) -> None:
    status, html = await send(unlocked, b"&".join(b"f%d=1" % i for i in range(50)))
    assert status == 400 and "too many fields" in html


async def test_another_content_type_is_refused(unlocked: Client) -> None:
    token = await fetch_csrf_token(unlocked)
    response = await unlocked.post(
        "/setup",
        json={"csrf_token": token},
        headers={"Origin": make_origin(unlocked)},
    )
    assert response.status == 415
    assert "format this page does not read" in await response.text()


async def test_a_multipart_form_is_refused(unlocked: Client) -> None:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("csrf_token", await fetch_csrf_token(unlocked))
    form.add_field("file", b"x" * 10, filename="a.bin")
    response = await unlocked.post("/setup", data=form, headers={"Origin": make_origin(unlocked)})
    assert response.status == 415


async def test_a_body_larger_than_its_length_says_is_cut(unlocked: Client) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 1024

    token = await fetch_csrf_token(unlocked)
    response = await unlocked.post(
        "/setup",
        data=chunks(),
        headers={**FORM, "Origin": make_origin(unlocked), "X-Token": token},
    )
    assert response.status == 413


@pytest.mark.parametrize("code", ["", "x" * 5_000, "\x00", "%ff", "ab\u202ecd"])
async def test_odd_codes_are_just_wrong(client: Client, code: str) -> None:
    response = await client.get("/?code=" + quote(code, safe="%"))
    assert response.status == 401


@pytest.mark.parametrize("plugin", ["%00", "x" * 500, "a%2Fb", "%ed%a0%80"])
async def test_odd_plugin_ids_get_a_404_message(
    unlocked: Client, daemon: FakeDaemon, plugin: str
) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    token = await fetch_csrf_token(unlocked)
    response = await unlocked.post(
        f"/updates/{plugin}/install",
        data={"csrf_token": token},
        headers={"Origin": make_origin(unlocked), "Accept": "application/json"},
    )
    assert response.status == 404


# Random forms: never a 500, never the password back.

SECRET = "Zq7Xw-SECRET-"
_ANY_TEXT = st.text(st.characters(codec=None), max_size=400)
_FIELD = st.one_of(st.none(), _ANY_TEXT, st.text(max_size=2000))
_OUTCOME = st.sampled_from(
    [None, CloudAuthError("no", status=401), CloudUnreachableError("down"), CloudResponseError("x")]
)


def _encode(value: str) -> str:
    # surrogatepass: a lone surrogate becomes bytes that are not valid UTF-8.
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    email=_FIELD,
    name=_FIELD,
    address=_FIELD,
    password_tail=_ANY_TEXT,
    extra=st.binary(max_size=300),
    outcome=_OUTCOME,
    spanish=st.booleans(),
)
def test_random_setup_forms_never_fail_or_echo_the_password(
    email: str | None,
    name: str | None,
    address: str | None,
    password_tail: str,
    extra: bytes,
    outcome: Exception | None,
    spanish: bool,
) -> None:
    password = SECRET + password_tail
    fields = {"email": email, "name": name, "address": address, "password": password}
    body = "&".join(f"{k}={_encode(v)}" for k, v in fields.items() if v is not None).encode()
    body += b"&" + extra.replace(b"&", b"") if extra else b""
    asyncio.run(_post_random(body, password, outcome, spanish))


async def _post_random(body: bytes, password: str, outcome: Any, spanish: bool) -> None:
    daemon = FakeDaemon(register_error=outcome)
    with tempfile.TemporaryDirectory() as folder:
        app = build_app(WebSettings(), daemon.actions(), Path(folder))
        async with TestClient(TestServer(app)) as client:
            await client.get(f"/?code={read_or_create_code(Path(folder))}")
            with capture_logs() as logs:
                language = {"Accept-Language": "es"} if spanish else {}
                status, html = await send(client, body, **language)
    assert status < 500, html
    assert status in (303, 400, 401, 413, 502), status
    assert SECRET not in html
    assert not any(SECRET in str(entry) for entry in logs)


def test_the_setup_form_never_lets_through_what_enrollment_refuses() -> None:
    from hublink.enroll import FIELD_LIMITS
    from hublink.web.forms import LIMITS

    for field, limit in FIELD_LIMITS.items():
        assert LIMITS[field] <= limit, field
