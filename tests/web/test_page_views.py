"""The page's views, forms, buttons and languages, against an in-memory daemon."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hublink.config import WebSettings
from hublink.errors import (
    AlreadyRegisteredError,
    CloudAuthError,
    CloudResponseError,
    CloudUnreachableError,
    HublinkError,
    UsageError,
)
from hublink.web import build_app, read_or_create_code
from support.page import CONNECTED, FakeDaemon, post

Client = TestClient[Any, Any]
JSON = {"Accept": "application/json"}


@contextlib.asynccontextmanager
async def unlocked_client(
    daemon: FakeDaemon, state_dir: Path, settings: WebSettings | None = None
) -> AsyncIterator[Client]:
    """A client of a page built for this test's own daemon, already unlocked."""
    app = build_app(settings or WebSettings(), daemon.actions(), state_dir)
    async with TestClient(TestServer(app)) as client:
        await client.get(f"/?code={read_or_create_code(state_dir)}")
        yield client


GOOD = {
    "email": "owner@shop.example",
    "password": "correct horse",
    "name": "Main Street shop",
    "address": "1 Main St",
}


# Setup


async def test_an_unregistered_hub_shows_the_setup_form(unlocked: Client) -> None:
    html = await (await unlocked.get("/")).text()
    for name in ("email", "password", "name", "address"):
        assert f'name="{name}"' in html
        assert f'<label for="{name}"' in html
    assert 'action="/setup"' in html


async def test_setup_registers_and_shows_the_status_view(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    response = await post(unlocked, "/setup", GOOD, follow=True)
    html = await response.text()
    assert response.status == 200
    assert "The hub is registered" in html and "main-street" in html
    sent = daemon.registrations[0]
    assert (sent.email, sent.name, sent.address) == (
        GOOD["email"],
        GOOD["name"],
        GOOD["address"],
    )
    assert sent.password.get_secret_value() == GOOD["password"]


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (CloudAuthError("bad credentials", status=401), 401, "did not accept this email"),
        (CloudUnreachableError("timed out"), 502, "could not be reached"),
        (CloudResponseError("plan limit reached", status=403), 502, "refused the registration"),
        (AlreadyRegisteredError("credentials exist"), 409, "registered already"),
        (UsageError("the hub needs a name"), 422, "need another look"),
        (HublinkError("disk full"), 502, "registration failed"),
    ],
)
async def test_each_setup_error_is_worded_on_the_form_with_the_fields_kept(
    unlocked: Client, daemon: FakeDaemon, error: HublinkError, status: int, words: str
) -> None:
    daemon.register_error = error
    response = await post(unlocked, "/setup", GOOD)
    html = await response.text()
    assert response.status == status
    assert words in html
    assert 'role="alert"' in html
    assert f'value="{GOOD["email"]}"' in html and f'value="{GOOD["name"]}"' in html
    assert GOOD["password"] not in html
    assert "Traceback" not in html


async def test_the_clouds_words_are_shown_only_where_they_help(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.register_error = CloudResponseError("plan limit \ud800 reached <b>", status=403)
    html = await (await post(unlocked, "/setup", GOOD)).text()
    assert "plan limit \ufffd reached &lt;b&gt;" in html


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("email", "", "Please fill in this field"),
        ("email", "not-an-email", "does not look like an email"),
        ("email", "a" * 300 + "@x.example", "at most 254 characters"),
        ("password", "", "Please fill in this field"),
        ("name", "", "Please fill in this field"),
        ("name", "x" * 101, "at most 100 characters"),
        ("name", "bad\x00name", "control characters"),
        ("address", "line\x1bone", "control characters"),
    ],
)
async def test_a_bad_field_is_named_next_to_it(
    unlocked: Client, daemon: FakeDaemon, field: str, value: str, words: str
) -> None:
    response = await post(unlocked, "/setup", {**GOOD, field: value})
    html = await response.text()
    assert response.status == 400
    assert words in html
    assert f'id="{field}-problem"' in html and 'aria-invalid="true"' in html
    assert daemon.registrations == []
    assert GOOD["password"] not in html


async def test_missing_fields_are_each_named(unlocked: Client, daemon: FakeDaemon) -> None:
    response = await post(unlocked, "/setup", {})
    html = await response.text()
    assert response.status == 400
    for field in ("email", "password", "name"):
        assert f'id="{field}-problem"' in html
    assert 'id="address-problem"' not in html


# Status


async def test_the_status_view_shows_the_hub_at_a_glance(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    html = await (await unlocked.get("/")).text()
    for text in (
        "Main Street shop",
        "main-street",
        "connected",
        "2026-11-29T10:00:00Z",
        "running",
        "<dd>3</dd>",
        "completed 2026-11-29T03:00:00Z b.age",
        "inventory 1.2.0 → 1.3.0",
        "ana@shop.example — left",
        "Back up now",
        "Run checks",
        'action="/updates/inventory/install"',
    ):
        assert text in html, text
    assert "Last error" not in html


async def test_a_link_that_is_down_shows_its_error_and_next_attempt(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    daemon.status_doc["websocket"].update(
        state="backoff", last_error="connection refused", next_attempt_at="2026-11-29T10:01:00Z"
    )
    html = await (await unlocked.get("/")).text()
    assert "backoff" in html and "connection refused" in html and "2026-11-29T10:01:00Z" in html


async def test_install_buttons_hide_without_the_install_hook(
    daemon: FakeDaemon, tmp_path: Path
) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    daemon.install_hook = False
    async with unlocked_client(daemon, tmp_path) as client:
        html = await (await client.get("/")).text()
        assert "inventory 1.2.0 → 1.3.0" in html and "/install" not in html
        response = await post(client, "/updates/inventory/install", headers=JSON)
        assert response.status == 404
    assert daemon.installs == []


async def test_a_status_object_of_the_wrong_shape_still_renders(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.status_doc = {
        "registered": True,
        "slug": ["not", "text"],
        "websocket": "broken",
        "tunnel": None,
        "outbox": {"pending": "many"},
        "plugin_updates": ["odd", {"plugin_id": None}],
        "revoked_users": {"not": "a list"},
        "last_backup": 7,
        "name": "\ud83d\ude00 \udc00 shop \u202e",
    }
    response = await unlocked.get("/")
    html = await response.text()
    assert response.status == 200
    assert "\U0001f600 \ufffd shop \ufffd" in html


async def test_api_status_answers_the_status_object_repaired(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    daemon.status_doc["websocket"]["last_error"] = "lone \udfff surrogate"
    response = await unlocked.get("/api/status")
    body = await response.json()
    assert response.status == 200
    assert body["slug"] == "main-street"
    assert body["websocket"]["last_error"] == "lone \ufffd surrogate"
    assert response.headers["Cache-Control"] == "no-store"


# Buttons


async def test_back_up_now_starts_one_backup(unlocked: Client, daemon: FakeDaemon) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    response = await post(unlocked, "/backup", headers=JSON)
    assert (response.status, (await response.json())["ok"]) == (202, True)
    response = await post(unlocked, "/backup", headers=JSON)
    assert response.status == 409
    assert "running already" in (await response.json())["message"]
    assert daemon.backups == 1


async def test_back_up_now_works_as_a_plain_form_post(unlocked: Client, daemon: FakeDaemon) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    response = await post(unlocked, "/backup")
    assert (response.status, response.headers["Location"]) == (303, "/")
    html = await (await unlocked.get("/")).text()
    assert "Backup started." in html and 'role="status"' in html


async def test_install_runs_the_hook_for_a_recorded_update(
    unlocked: Client, daemon: FakeDaemon
) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    response = await post(unlocked, "/updates/inventory/install", headers=JSON)
    assert response.status == 202
    assert "inventory" in (await response.json())["message"]
    response = await post(unlocked, "/updates/nothing/install", headers=JSON)
    assert response.status == 404
    assert daemon.installs == ["inventory", "nothing"]


async def test_run_checks_shows_the_doctors_results(unlocked: Client, daemon: FakeDaemon) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)
    daemon.doctor_doc["checks"][1]["detail"] = "frpc \ud800 not found"
    response = await post(unlocked, "/checks", follow=True)
    html = await response.text()
    assert "some failed" in html
    assert "cloud reachable" in html and "frpc \ufffd not found" in html and "install frp" in html
    as_json = await (await post(unlocked, "/checks", headers=JSON)).json()
    assert as_json["ok"] is False and len(as_json["checks"]) == 2


async def test_a_daemon_error_is_worded_not_raised(daemon: FakeDaemon, tmp_path: Path) -> None:
    daemon.status_doc = copy.deepcopy(CONNECTED)

    async def failing() -> bool:
        raise HublinkError("the backup database is not set")

    daemon.backup = failing  # type: ignore[method-assign]
    async with unlocked_client(daemon, tmp_path) as client:
        response = await post(client, "/backup", headers=JSON)
        assert response.status == 502
        assert "the backup database is not set" in (await response.json())["message"]


# Languages


async def test_spanish_follows_accept_language(unlocked: Client, daemon: FakeDaemon) -> None:
    response = await unlocked.get("/", headers={"Accept-Language": "es-MX,es;q=0.9,en;q=0.5"})
    html = await response.text()
    assert '<html lang="es">' in html and "Configurar este hub" in html
    assert response.headers["Content-Language"] == "es"
    daemon.register_error = CloudUnreachableError("timeout")
    html = await (await post(unlocked, "/setup", GOOD, headers={"Accept-Language": "es"})).text()
    assert "No se pudo contactar con la nube" in html


async def test_english_is_the_default(unlocked: Client) -> None:
    for header in ("", "fr-FR, de;q=0.8", "es;q=0, en;q=0.1", "*"):
        html = await (await unlocked.get("/", headers={"Accept-Language": header})).text()
        assert '<html lang="en">' in html and "Set up this hub" in html


async def test_web_language_forces_one(daemon: FakeDaemon, tmp_path: Path) -> None:
    async with unlocked_client(daemon, tmp_path, WebSettings(language="es")) as client:
        response = await client.get("/", headers={"Accept-Language": "en"})
        assert "Configurar este hub" in await response.text()


def test_a_missing_mo_is_compiled_from_its_po(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import shutil

    from hublink.web import i18n

    source = i18n.LOCALE_DIR / "es" / "LC_MESSAGES" / "hublink.po"
    target = tmp_path / "es" / "LC_MESSAGES"
    target.mkdir(parents=True)
    shutil.copy(source, target / "hublink.po")
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        assert i18n.translations("es").gettext("Back up now") == "Hacer copia ahora"
    finally:
        i18n.translations.cache_clear()


def test_the_spanish_catalog_translates_every_text() -> None:
    from babel.messages.pofile import read_po

    from hublink.web.i18n import LOCALE_DIR

    with (LOCALE_DIR / "hublink.pot").open("rb") as source:
        template = {m.id for m in read_po(source) if m.id}
    with (LOCALE_DIR / "es" / "LC_MESSAGES" / "hublink.po").open("rb") as source:
        spanish = {m.id: m for m in read_po(source) if m.id}
    assert set(spanish) == template
    assert [m.id for m in spanish.values() if not m.string or m.fuzzy] == []
