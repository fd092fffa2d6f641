"""Contract section 9, the local page, as ``hublink status`` shows it.

What it proves: run by a user who can read ``{state_dir}/web-code``, ``hublink
status`` shows the page's URL carrying the setup code (and ``--json`` its
``web.setup_url``); the daemon's own status answer and its log never hold the
code; without the file only where to find it is said; the summary's page lines.

The page itself is proven elsewhere: its security rules, views and input in
tests/web/ (an in-memory daemon), the whole wizard in a real browser against a
real daemon and the reference Cloud in tests/web/test_page_e2e.py, the daemon
waiting for a registration and a ``web.listen`` in use in
tests/test_daemon_registration.py, ``POST /v1/register`` and the other new
calls in tests/control/.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hublink.config import Settings
from support.cli import make_child_env, run_hublink
from support.cloud import HubEnv
from support.daemon import Daemons


def status_text(settings: Settings) -> Any:
    """``hublink status`` run with ``settings``; the finished process."""
    result = run_hublink("status", env=make_child_env(settings))
    assert result.returncode == 0, result.stderr
    return result


def status_json(settings: Settings) -> dict[str, Any]:
    """``hublink status --json`` run with ``settings``; the object."""
    result = run_hublink("status", "--json", env=make_child_env(settings))
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def test_status_shows_the_page_url_with_its_code_to_whoever_can_read_it(
    hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await daemons.start()
    live = await daemon.wait_status(lambda s: s["web"]["url"] is not None)
    code = (hub.settings.state_dir / "web-code").read_text().strip()
    setup_url = f"{live['web']['url']}?code={code}"
    # The daemon's own answer never carries the code; the CLI adds it from the file.
    assert "setup_url" not in live["web"] and code not in json.dumps(live)

    result = await asyncio.to_thread(status_text, hub.settings)
    assert f"page:       {setup_url}" in result.stdout.splitlines()
    status = await asyncio.to_thread(status_json, hub.settings)
    assert status["web"]["setup_url"] == setup_url
    assert code not in daemon.log_text()

    # Without the file (another user's view of it), only where to find it.
    (hub.settings.state_dir / "web-code").unlink()
    result = await asyncio.to_thread(status_text, hub.settings)
    assert f"page:       {live['web']['url']}" in result.stdout
    assert "its setup code is in" in result.stdout and "?code=" not in result.stdout


def test_the_page_lines_of_the_summary(tmp_path: Path) -> None:
    from hublink.status import offline_status, summary_lines
    from hublink.statusreport import StatusReport

    def lines(web: dict[str, Any]) -> list[str]:
        status: StatusReport = offline_status(Settings(state_dir=tmp_path / "state"))
        status["daemon"] = {"running": True, "pid": 7}
        status["web"] = {"enabled": True, "listen": "127.0.0.1:8002", "url": None, "error": None}
        status["web"].update(web)  # type: ignore[typeddict-item]
        return [line for line in summary_lines(status) if "page" in line]

    assert lines({"enabled": False}) == ["page:       off (web.enabled = false)"]
    assert lines({"error": "port in use"}) == ["page:       not served: port in use"]
    assert lines({"url": "http://127.0.0.1:8002/", "setup_url": "http://x/?code=abc"}) == [
        "registered: no (enroll from the page below, or `hublink register`)",
        "page:       http://x/?code=abc",
    ]
