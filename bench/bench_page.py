"""The local page: what a browser transfers for a full status view, how soon it paints, and
what the page costs an idle daemon.

Everything on this box: a real ``hublink run`` linked to the reference Cloud
(in this process), Debian's chromium through Playwright, a fresh browser
context (cold cache) per round.

- bytes: the bodies of every response the browser gets for the status view
  (HTML, stylesheet, script, and the script's first ``/api/status`` refresh),
  beside ``GET /v1/status``'s own body (the data the view shows);
- first contentful paint of the status view, beside the very same page saved
  as static files and served by a bare aiohttp static server;
- idle RSS of two daemons running side by side in the same run, both linked,
  one with the page on (``web.enabled = true``, the default) and one with it
  off, sampled over ``BENCH_PAGE_IDLE_SECONDS`` (default 10) after a warm-up.

``python bench/bench_page.py`` prints the rows; ``make bench`` puts them in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from bench_idle import make_hub, proc_rss, start_daemon, wait_for
from playwright.async_api import Browser, Response, async_playwright
from report import Row, rounds

from hublink.control import status_now
from hublink.devcloud import DevCloud

CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 900}
FCP = "performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0]"


def rows() -> list[Row]:
    """Bytes and first paint of the status view; idle RSS with the page on and off."""
    idle = float(os.environ.get("BENCH_PAGE_IDLE_SECONDS", "10"))
    page_bytes, status_bytes, page_fcp, static_fcp = asyncio.run(measure_view(rounds()))
    rss_on: list[float] = []
    rss_off: list[float] = []
    for _ in range(rounds()):
        on, off = asyncio.run(measure_rss(idle))
        rss_on.append(on / 2**20)
        rss_off.append(off / 2**20)
    return [
        Row(
            "local page: bytes for a full status view (cold cache)",
            "KiB",
            [b / 1024 for b in page_bytes],
            [b / 1024 for b in status_bytes],
            "the status object it shows (GET /v1/status)",
            "< 64 KiB",
        ),
        Row(
            "local page: first contentful paint of the status view",
            "ms",
            page_fcp,
            static_fcp,
            "the same page as static files",
            "< 500 ms",
        ),
        Row(
            f"idle RSS, connected, page on ({idle:.0f} s)",
            "MiB",
            rss_on,
            rss_off,
            "the same daemon with web.enabled = false",
            "<= 1.25x",
        ),
    ]


async def measure_view(count: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """``count`` rounds of: page bytes, status bytes, page FCP ms, static copy FCP ms."""
    results: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        daemon = None
        static: web.AppRunner | None = None
        try:
            _, state_dir = make_hub(cloud, base, "page")
            daemon = await start_daemon(cloud.url, state_dir)
            socket_path = state_dir.parent / "run" / "control.sock"
            status = await _linked(socket_path)
            url = status["web"]["url"]
            code = (state_dir / "web-code").read_text().strip()
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                copy_dir = base / "static-copy"
                await _save_copy(browser, url, code, copy_dir)
                static, static_url = await _serve_static(copy_dir)
                for _ in range(count):
                    results[3].append((await _load(browser, static_url, None))[1])
                    size, paint = await _load(browser, url, code)
                    results[0].append(size)
                    results[2].append(paint)
                    answer = await asyncio.to_thread(status_now, socket_path)
                    results[1].append(len(json.dumps(answer).encode()))
                await browser.close()
        finally:
            if static is not None:
                await static.cleanup()
            if daemon is not None and daemon.returncode is None:
                daemon.terminate()
                await daemon.wait()
            await cloud.stop()
    return results


async def _linked(socket_path: Path) -> dict[str, Any]:
    """The daemon's status once its link is up and its page served."""
    found: dict[str, Any] = {}

    def ready() -> bool:
        status = status_now(socket_path)
        if status and status["websocket"]["state"] == "connected" and status["web"]["url"]:
            found.update(status)
            return True
        return False

    await wait_for(ready)
    return found


async def _load(browser: Browser, url: str, code: str | None) -> tuple[float, float]:
    """Bytes of every response body, and the first contentful paint in ms, of ``url`` loaded
    in a fresh context; with ``code``, the context is unlocked first (not counted)."""
    context = await browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    if code is not None:
        # The API request context shares the browser context's cookies: the session is set.
        await context.request.get(f"{url}?code={code}", max_redirects=0)
    page = await context.new_page()
    responses: list[Response] = []

    def keep(response: Response) -> None:
        responses.append(response)

    page.on("response", keep)
    if code is not None:
        async with page.expect_response(lambda r: r.url.endswith("/api/status")):
            await page.goto(url)
    else:
        await page.goto(url)
    await page.wait_for_load_state("load")
    # The paint entry may be recorded a frame after "load". Polled from here: the
    # page's CSP (script-src 'self') refuses wait_for_function's string eval.
    paint = await page.evaluate(FCP)
    while paint is None:
        await asyncio.sleep(0.01)
        paint = await page.evaluate(FCP)
    total = 0
    for response in responses:
        total += len(await response.body())
    await context.close()
    return float(total), float(paint)


async def _save_copy(browser: Browser, url: str, code: str, folder: Path) -> None:
    """The status view's HTML, stylesheet and script, as files under ``folder``."""
    context = await browser.new_context()
    await context.request.get(f"{url}?code={code}", max_redirects=0)
    (folder / "static").mkdir(parents=True)
    for path, name in (("", "index.html"), ("static/page.css", None), ("static/page.js", None)):
        answer = await context.request.get(url + path)
        (folder / (name or path)).write_bytes(await answer.body())
    await context.close()


async def _serve_static(folder: Path) -> tuple[web.AppRunner, str]:
    """A bare aiohttp static server of ``folder`` on a free loopback port."""

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(folder / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", folder / "static")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


async def measure_rss(seconds: float) -> tuple[int, int]:
    """Median RSS of a linked daemon with the page on, and of one with it off, side by side."""
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        procs: list[asyncio.subprocess.Process] = []
        try:
            on_creds, on_dir = make_hub(cloud, base, "on")
            off_creds, off_dir = make_hub(cloud, base, "off")
            procs.append(await start_daemon(cloud.url, on_dir))
            procs.append(await start_daemon(cloud.url, off_dir, HUBLINK_WEB__ENABLED="false"))
            await wait_for(
                lambda: cloud.heartbeats(on_creds.hub_id) and cloud.heartbeats(off_creds.hub_id)
            )
            await asyncio.sleep(min(5.0, seconds / 2))  # warm-up: imports done, first beats sent
            samples: tuple[list[int], list[int]] = ([], [])
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                await asyncio.sleep(1.0)
                for sample, proc in zip(samples, procs, strict=True):
                    sample.append(proc_rss(proc.pid))
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
            await cloud.stop()
    return int(statistics.median(samples[0])), int(statistics.median(samples[1]))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    for row in rows():
        print(" | ".join(row.cells()))
