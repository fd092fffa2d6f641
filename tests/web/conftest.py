"""The page's tests: compiled catalogs, an in-memory daemon, a client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from hublink.config import WebSettings
from hublink.web import build_app, read_or_create_code
from hublink.web.i18n import LOCALE_DIR, translations
from support.page import FakeDaemon


@pytest.fixture(scope="session", autouse=True)
def _compiled_catalogs() -> None:
    """Compile each .po whose .mo is missing or older, as ``make catalogs`` does."""
    for po in LOCALE_DIR.glob("*/LC_MESSAGES/hublink.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with po.open("rb") as src:
                catalog = read_po(src)
            with mo.open("wb") as out:
                write_mo(out, catalog)
    translations.cache_clear()


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def settings() -> WebSettings:
    return WebSettings(listen="127.0.0.1:0")


@pytest.fixture
async def client(
    daemon: FakeDaemon, state_dir: Path, settings: WebSettings
) -> AsyncIterator[TestClient[Any, Any]]:
    """A browser-like client of a fresh page; locked until a test unlocks it."""
    app = build_app(settings, daemon.actions(), state_dir)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.fixture
def code(client: TestClient[Any, Any], state_dir: Path) -> str:
    return read_or_create_code(state_dir)


@pytest.fixture
async def unlocked(client: TestClient[Any, Any], code: str) -> TestClient[Any, Any]:
    """The client after opening the page's URL with the setup code."""
    response = await client.get(f"/?code={code}")
    assert response.status == 200
    return client
