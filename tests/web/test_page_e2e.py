"""The local page in a real browser, served by a real ``hublink run`` against the reference Cloud.

Debian's chromium driven by Playwright (never Playwright's own browser
download). A box fresh from the installer: the daemon waits without
credentials; the owner unlocks the page with the setup code, types a wrong
password, then the right one, and watches the link come up without a restart;
then Install (a hook that writes a file), Back up now (a real SQLite file
uploaded to the Cloud) and Run checks; in English on a desktop and on a 390 px
phone, and in Spanish. Every request the browser makes stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hublink.config import BackupSettings
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from support.backup import make_database
from support.daemon import Daemons, HublinkProcess
from support.hubs import connected, running, unregistered_hub
from support.polling import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is absent (apt-get install --no-install-recommends chromium)",
    ),
]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
#: Waits that span the page's own refresh (every 5 s) and a reconnecting link.
SLOW = 25_000
UPDATE = {
    "type": "plugin_update_available",
    "plugin_id": "inventory",
    "current_version": "1.2.0",
    "new_version": "1.3.0",
    "download_url": "https://cloud.example/plugins/inventory-1.3.0.zip",
}
RECORDING_HOOK = """
import json, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(json.load(sys.stdin)) + "\\n")
"""


@dataclass
class Box:
    """A hub box running ``hublink run`` with no credentials yet."""

    daemon: HublinkProcess
    cloud: DevCloud
    url: str
    code: str
    installs: Path

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


@dataclass
class Visit:
    """One browser context: what it requested and what went wrong in it."""

    page: Any
    requested: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@pytest.fixture
async def page_box(devcloud: DevCloud, tmp_path: Path, daemons: Daemons) -> Box:
    database = tmp_path / "shop.sqlite3"
    make_database(database, rows=500)
    hook = tmp_path / "install.py"
    hook.write_text(RECORDING_HOOK)
    installs = tmp_path / "installs.jsonl"
    hub = unregistered_hub(
        devcloud,
        tmp_path / "box",
        backup=BackupSettings(database=database),
        hooks={"install_plugin_update": (sys.executable, str(hook), str(installs))},
    )
    daemon = await daemons.start(hub)
    status = await daemon.wait_status(lambda s: running(s) and s["web"]["url"])
    code = (hub.settings.state_dir / "web-code").read_text().strip()
    return Box(daemon, devcloud, status["web"]["url"], code, installs)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def visit(browser: Any, page_box: Box, **context: Any) -> Visit:
    """A fresh browser context whose every request is recorded; any not for the box fails."""
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    seen = Visit(page)

    async def only_this_box(route: Any) -> None:
        url = route.request.url
        seen.requested.append(url)
        if url.startswith(page_box.base + "/"):
            await route.continue_()
        else:
            await route.abort()

    await ctx.route("**/*", only_this_box)
    page.on("console", lambda m: seen.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: seen.problems.append(str(err)))
    return seen


def assert_stayed_on_the_box(seen: Visit, page_box: Box) -> None:
    assert seen.requested
    assert all(url.startswith(page_box.base + "/") for url in seen.requested), seen.requested
    # The refused password's page is a 401, which chromium notes on the console.
    assert [p for p in seen.problems if not p.startswith("Failed to load resource")] == []


async def fits_the_screen(page: Any, width: int) -> None:
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll} px wide on a {width} px screen"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_the_whole_wizard_then_install_back_up_and_checks(
    page_box: Box, browser: Any, viewport: dict[str, int]
) -> None:
    expect = playwright.expect
    seen = await visit(browser, page_box, viewport=viewport)
    page = seen.page
    pid = page_box.daemon.pid

    # 1. Locked: only the code form. The desktop types the code, the phone opens
    #    the URL that `hublink status` prints.
    if viewport is DESKTOP:
        await page.goto(page_box.url)
        await expect(page.get_by_label("Setup code")).to_be_visible()
        await page.get_by_label("Setup code").fill(page_box.code)
        await page.get_by_role("button", name="Unlock").click()
    else:
        await page.goto(f"{page_box.url}?code={page_box.code}")
    await expect(page.get_by_role("heading", name="Set up this hub")).to_be_visible()
    assert "code=" not in page.url
    await fits_the_screen(page, viewport["width"])

    # 2. A wrong password: said in plain words, the other fields kept, nothing saved.
    await page.get_by_label("Email").fill(DEMO_EMAIL)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_label("Hub name").fill("Main Street shop")
    await page.get_by_label("Address").fill("1 Main Street")
    await page.get_by_role("button", name="Register this hub").click()
    await expect(page.get_by_role("alert")).to_contain_text("did not accept")
    await expect(page.get_by_label("Email")).to_have_value(DEMO_EMAIL)
    await expect(page.get_by_label("Hub name")).to_have_value("Main Street shop")
    await expect(page.get_by_label("Password")).to_have_value("")
    assert not page_box.daemon.settings.credentials_path.exists()

    # 3. The right one: the status view, and the link comes up without a restart.
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Register this hub").click()
    await expect(page.get_by_role("heading", name="Main Street shop")).to_be_visible()
    await expect(page.locator("#status .state-connected")).to_be_visible(timeout=SLOW)
    status = await page_box.daemon.wait_status(connected)
    assert status["daemon"]["pid"] == pid
    page_box.daemon.assert_running()
    await expect(page.locator("#status")).to_contain_text(status["slug"])
    await fits_the_screen(page, viewport["width"])
    hub_id = status["hub_id"]

    # 4. The Cloud announces an update: the view shows it without a reload; Install
    #    runs the hook with the recorded message.
    await page.evaluate("window.hublinkMark = 1")
    assert await page_box.cloud.push(hub_id, UPDATE)
    install = page.get_by_role("button", name="Install the update for inventory")
    await expect(install).to_be_visible(timeout=SLOW)
    await install.click()
    await expect(page.locator("#main > .notice")).to_contain_text("inventory")
    await wait_until(
        lambda: page_box.installs.exists() and page_box.installs.read_text(), what="hook"
    )
    assert json.loads(page_box.installs.read_text().splitlines()[0]) == UPDATE

    # 5. Back up now: the real database goes to the Cloud, and the view says so.
    await page.get_by_role("button", name="Back up now").click()
    await expect(page.locator("#main > .notice")).to_contain_text("Backup started.")
    await expect(page.locator("#status")).to_contain_text("completed", timeout=SLOW)
    assert len(page_box.cloud.backup_records(hub_id)) == 1

    # 6. Run checks: the doctor's results, run by the daemon.
    await page.get_by_role("button", name="Run checks").click()
    checks = page.locator("#checks")
    await expect(checks).to_contain_text("credentials")
    await expect(checks).to_contain_text("served at " + page_box.url)
    assert await page.evaluate("window.hublinkMark") == 1  # never reloaded
    await fits_the_screen(page, viewport["width"])

    assert_stayed_on_the_box(seen, page_box)
    assert DEMO_PASSWORD not in page_box.daemon.log_text()


async def test_the_page_speaks_spanish(page_box: Box, browser: Any) -> None:
    expect = playwright.expect
    seen = await visit(
        browser, page_box, viewport=PHONE, extra_http_headers={"Accept-Language": "es"}
    )
    page = seen.page

    await page.goto(page_box.url)
    await expect(page.locator("html")).to_have_attribute("lang", "es")
    await page.get_by_label("Código de configuración").fill(page_box.code)
    await page.get_by_role("button", name="Desbloquear").click()
    await expect(page.get_by_role("heading", name="Configurar este hub")).to_be_visible()

    await page.get_by_label("Correo electrónico").fill(DEMO_EMAIL)
    await page.get_by_label("Contraseña").fill("mala")
    await page.get_by_label("Nombre del hub").fill("Tienda Ñandú")
    await page.get_by_role("button", name="Registrar este hub").click()
    await expect(page.get_by_role("alert")).to_contain_text("La nube no aceptó")

    await page.get_by_label("Contraseña").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Registrar este hub").click()
    await expect(page.get_by_role("heading", name="Tienda Ñandú")).to_be_visible()
    await expect(page.locator("#status")).to_contain_text("Enlace")
    await expect(page.get_by_role("button", name="Hacer copia ahora")).to_be_visible()
    await expect(page.locator("#status .state-connected")).to_be_visible(timeout=SLOW)
    assert_stayed_on_the_box(seen, page_box)
