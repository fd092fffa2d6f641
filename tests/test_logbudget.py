"""The daemon's line budget: a flood of one event writes BURST lines a second and says
how many it left out; nothing else is lost."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from hublink.logbudget import SUPPRESSED, LineBudget, budgeted
from support.cloud import HubEnv
from support.daemon import Daemons
from support.polling import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def capture() -> Iterator[LogCapture]:
    yield LogCapture()
    structlog.reset_defaults()


def configure(capture: LogCapture, budget: LineBudget) -> None:
    structlog.configure(
        processors=[capture],
        wrapper_class=budgeted(structlog.make_filtering_bound_logger(logging.DEBUG), budget),
        cache_logger_on_first_use=False,
    )


def events(capture: LogCapture, name: str) -> list[dict[str, Any]]:
    return [e for e in capture.entries if e["event"] == name]


async def test_a_flood_writes_the_burst_then_one_line_saying_how_many_were_left_out(
    capture: LogCapture,
) -> None:
    configure(capture, LineBudget(burst=5, window=0.05))
    log = structlog.get_logger()
    for n in range(100):
        log.info("plugin update available", n=n)
    assert [e["n"] for e in events(capture, "plugin update available")] == [0, 1, 2, 3, 4]
    await wait_until(lambda: events(capture, SUPPRESSED), timeout=5)
    (report,) = events(capture, SUPPRESSED)
    assert report["line"] == "plugin update available"
    assert report["count"] == 95
    assert report["log_level"] == "warning"


def test_each_event_has_a_budget_of_its_own_and_a_new_window_a_new_one(
    capture: LogCapture,
) -> None:
    clock = FakeClock()
    configure(capture, LineBudget(burst=2, window=1.0, clock=clock))
    log = structlog.get_logger()
    for _ in range(4):
        log.info("a")
        log.warning("b")
    assert len(events(capture, "a")) == len(events(capture, "b")) == 2
    clock.now += 1.0
    log.info("a")
    # No event loop ran a timer: the window's next line says what was left out.
    assert events(capture, "a")[-1]["left_out_before"] == 2
    assert len(events(capture, "a")) == 3


async def test_a_daemon_flooded_by_the_cloud_handles_every_message_and_says_what_it_did_not_log(
    hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    count = 400
    for n in range(count):
        frame = {
            "type": "plugin_update_available",
            "plugin_id": f"flood-{n}",
            "current_version": "1.0.0",
            "new_version": "1.0.1",
            "download_url": "https://cloud.example/p.zip",
        }
        assert await hub.cloud.push(hub.hub_id, frame)
    status = await daemon.wait_status(lambda s: len(s["plugin_updates"]) == count)
    assert {u["plugin_id"] for u in status["plugin_updates"]} == {
        f"flood-{n}" for n in range(count)
    }

    def accounted() -> bool:
        lines = daemon.log_events()
        ours = "plugin update available"
        written = sum(e["event"] == ours for e in lines)
        left_out = sum(e["count"] for e in lines if e["event"] == SUPPRESSED and e["line"] == ours)
        left_out += sum(e.get("left_out_before", 0) for e in lines if e["event"] == ours)
        return written + left_out == count and left_out > 0

    await wait_until(accounted, what="every update written or counted")
