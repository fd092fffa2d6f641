"""The page in a real browser (Debian's chromium), on a phone and on a desktop.

Walks locked → unlock → setup with a wrong password → setup → status → Back up
now → Run checks, and proves no request leaves 127.0.0.1, the script's
refresh works, and the CSP holds (chromium reports violations on the console).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from hublink.config import WebSettings
from hublink.web import PageServer, build_app, read_or_create_code
from support.page import FakeDaemon

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is absent (apt-get install --no-install-recommends chromium)",
    ),
]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
PASSWORD = "correct horse battery"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_the_whole_walk_in_a_browser(tmp_path: Path, viewport: dict[str, int]) -> None:
    daemon = FakeDaemon(accepted_password=PASSWORD)
    server = PageServer(build_app(WebSettings(), daemon.actions(), tmp_path), "127.0.0.1:0")
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    requested: list[str] = []
    problems: list[str] = []
    try:
        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = await browser.new_context(viewport=viewport)

            async def only_this_box(route: Any) -> None:
                url = route.request.url
                requested.append(url)
                if url.startswith(base + "/"):
                    await route.continue_()
                else:
                    await route.abort()

            await context.route("**/*", only_this_box)
            page = await context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(str(err)))
            await _walk(page, base, daemon, tmp_path, full=viewport == DESKTOP)
            await browser.close()
    finally:
        await server.stop()
    assert requested and all(url.startswith(base + "/") for url in requested), requested
    # The refused password's page is a 401, which chromium notes on the console.
    assert [p for p in problems if not p.startswith("Failed to load resource")] == []


async def _walk(page: Any, base: str, daemon: FakeDaemon, state_dir: Path, *, full: bool) -> None:
    expect = playwright.expect
    await page.goto(base + "/")
    await expect(page.get_by_label("Setup code")).to_be_visible()

    await page.get_by_label("Setup code").fill(read_or_create_code(state_dir))
    await page.get_by_role("button", name="Unlock").click()
    await expect(page.get_by_role("heading", name="Set up this hub")).to_be_visible()
    assert page.url == base + "/"

    await page.get_by_label("Email").fill("owner@shop.example")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_label("Hub name").fill("Main Street shop")
    await page.get_by_role("button", name="Register this hub").click()
    await expect(page.get_by_role("alert")).to_contain_text("did not accept")
    await expect(page.get_by_label("Email")).to_have_value("owner@shop.example")
    await expect(page.get_by_label("Password")).to_have_value("")

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Register this hub").click()
    await expect(page.get_by_role("heading", name="Main Street shop")).to_be_visible()
    await expect(page.locator("#status")).to_contain_text("connected")

    # A mark on the window survives only if the buttons work without a reload.
    await page.evaluate("window.hublinkMark = 1")
    await page.get_by_role("button", name="Back up now").click()
    await expect(page.locator("#main > .notice")).to_contain_text("Backup started.")
    assert daemon.backups == 1

    await page.get_by_role("button", name="Run checks").click()
    await expect(page.locator("#checks")).to_contain_text("install frp")
    assert await page.evaluate("window.hublinkMark") == 1

    if full:
        # The status refreshes itself from /api/status.
        changed = copy.deepcopy(daemon.status_doc)
        changed["websocket"].update(state="backoff", last_error="connection refused")
        daemon.status_doc = changed
        await expect(page.locator("#status")).to_contain_text("connection refused", timeout=12_000)
        assert await page.evaluate("window.hublinkMark") == 1
