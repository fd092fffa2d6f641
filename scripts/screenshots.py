#!/usr/bin/env python3
"""Screenshots of the local page (setup and status, phone and desktop) with Debian's chromium.

Usage: scripts/screenshots.py [OUTPUT_DIR]   (default docs/screenshots; `make screenshots`)

The page runs on 127.0.0.1 against the tests' in-memory daemon; nothing leaves the box.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from playwright.async_api import Page, async_playwright  # noqa: E402

from hublink.web import PageServer, WebSettings, build_app, read_or_create_code  # noqa: E402
from support.page import CONNECTED, FakeDaemon  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 900}}


async def shoot(out: Path) -> list[Path]:
    """Take the four screenshots into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for label, viewport in VIEWPORTS.items():
            with tempfile.TemporaryDirectory() as folder:
                daemon = FakeDaemon(accepted_password="right")
                app = build_app(WebSettings(), daemon.actions(), Path(folder))
                server = PageServer(app, "127.0.0.1:0")
                await server.start()
                try:
                    context = await browser.new_context(viewport=viewport)
                    page = await context.new_page()
                    base = f"http://127.0.0.1:{server.port}"
                    await page.goto(f"{base}/?code={read_or_create_code(Path(folder))}")
                    await _setup_with_error(page)
                    taken.append(out / f"setup-{label}.png")
                    await page.screenshot(path=taken[-1], full_page=True)
                    daemon.status_doc = _busy_status()
                    await page.goto(base + "/")
                    await page.get_by_role("button", name="Back up now").click()
                    await page.get_by_role("button", name="Run checks").click()
                    await page.locator("#checks").wait_for()
                    taken.append(out / f"status-{label}.png")
                    await page.screenshot(path=taken[-1], full_page=True)
                    await context.close()
                finally:
                    await server.stop()
        await browser.close()
    return taken


async def _setup_with_error(page: Page) -> None:
    await page.get_by_label("Email").fill("owner@shop.example")
    await page.get_by_label("Password").fill("wrong")
    await page.get_by_label("Hub name").fill("Main Street shop")
    await page.get_by_label("Address").fill("1 Main Street, Springfield")
    await page.get_by_role("button", name="Register this hub").click()
    await page.get_by_role("alert").wait_for()


def _busy_status() -> dict[str, object]:
    status = {**CONNECTED}
    status["websocket"] = {
        **CONNECTED["websocket"],
        "state": "backoff",
        "last_error": "connection refused by cloud.example",
        "next_attempt_at": "2026-11-29T10:01:30Z",
    }
    status["plugin_updates"] = [
        *CONNECTED["plugin_updates"],
        {"plugin_id": "loyalty", "current_version": "2.0.1", "new_version": "2.1.0"},
    ]
    return status


def main() -> None:
    """Entry point."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    for path in asyncio.run(shoot(out)):
        print(path)


if __name__ == "__main__":
    main()
