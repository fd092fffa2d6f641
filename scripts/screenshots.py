#!/usr/bin/env python3
"""Screenshots of the real local page: setup and status, on a desktop and a phone, in English.

Usage: scripts/screenshots.py [OUTPUT_DIR]   (default docs/screenshots; `make screenshots`)

Everything is real and on this box: the reference Cloud (with frps when `make frp`
has fetched it), a real ``hublink run`` started unregistered, and Debian's
chromium. The setup view is shot after a wrong password (its error showing);
then the page registers the hub, the Cloud announces a plugin update and
revokes a user, Back up now uploads the shop's database, Run checks shows the
doctor's results, and the status view is shot.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD
from hublink.devcloud.demo import Demo, Timeline, local_app, wait_until

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
UPDATE = {
    "type": "plugin_update_available",
    "plugin_id": "inventory",
    "current_version": "1.2.0",
    "new_version": "1.3.0",
    "download_url": "https://cloud.example/plugins/inventory-1.3.0.zip",
}
REVOKED = {
    "type": "user_revoked",
    "user_id": "u-17",
    "email": "ana@shop.example",
    "reason": "left the shop",
}
#: The page refreshes itself every 5 s; a link or a backup may take a few.
SLOW_MS = 30_000


async def shoot(out: Path) -> list[Path]:
    """Take the four screenshots into ``out``; return their paths."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    taken: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="hublink-shots-") as folder:
        demo = Demo(Path(folder), Timeline(out=io.StringIO()))
        async with AsyncExitStack() as stack, async_playwright() as pw:
            setup_url = await _start(demo, stack)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            stack.push_async_callback(browser.close)
            pages = {
                label: await _open(browser, view, setup_url) for label, view in VIEWPORTS.items()
            }
            for label, page in pages.items():
                await _wrong_password(page)
                taken.append(out / f"setup-{label}.png")
                await page.screenshot(path=taken[-1], full_page=True)
            await _register_and_fill(demo, pages["desktop"])
            for label, page in pages.items():
                await page.goto(setup_url.split("?")[0])
                await page.get_by_role("button", name="Run checks").click()
                await page.locator("#checks").wait_for()
                taken.append(out / f"status-{label}.png")
                await page.screenshot(path=taken[-1], full_page=True)
    return taken


async def _start(demo: Demo, stack: AsyncExitStack) -> str:
    """The Cloud, the Hub's app and database, and an unregistered daemon; the page's URL."""
    await demo.cloud.start()
    stack.push_async_callback(demo.cloud.stop)
    runner = await local_app(demo.local_port)
    stack.push_async_callback(runner.cleanup)
    await asyncio.to_thread(demo.make_database)
    await asyncio.to_thread(demo.write_config)
    await demo.start_daemon()
    stack.push_async_callback(demo.stop_daemon)
    status = await wait_until("the page", lambda: _page_status(demo))
    return str(status["web"]["setup_url"])


async def _page_status(demo: Demo) -> dict[str, Any] | None:
    status = await demo.status()
    return status if (status.get("web") or {}).get("setup_url") else None


async def _open(browser: Browser, viewport: dict[str, int], setup_url: str) -> Page:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(setup_url)
    return page


async def _wrong_password(page: Page) -> None:
    await page.get_by_label("Email").fill(DEMO_EMAIL)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_label("Hub name").fill("Main Street shop")
    await page.get_by_label("Address").fill("1 Main Street, Springfield")
    await page.get_by_role("button", name="Register this hub").click()
    await page.get_by_role("alert").wait_for()


async def _register_and_fill(demo: Demo, page: Page) -> None:
    """Register through the page, then give the status view something to show."""
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Register this hub").click()
    await page.locator("#status .state-connected").wait_for(timeout=SLOW_MS)
    hub_id = str((await demo.status())["hub_id"])
    if demo.frp is not None:
        await page.locator("#status .state-running").wait_for(timeout=SLOW_MS)
    await demo.cloud.push(hub_id, REVOKED)
    await demo.cloud.push(hub_id, UPDATE)
    await page.get_by_role("button", name="Back up now").click()
    await page.locator("#status").get_by_text("completed").wait_for(timeout=SLOW_MS)
    await page.get_by_role("button", name="Install the update for inventory").wait_for(
        timeout=SLOW_MS
    )


def main() -> None:
    """Entry point."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    from hublink import logs

    logs.configure("warning", "console")
    for path in asyncio.run(shoot(out)):
        print(path)


if __name__ == "__main__":
    main()
