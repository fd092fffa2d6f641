"""Contract section 10: ``GET /metrics`` of a real daemon, on the control socket and on
``metrics.listen``, with every series of the contract moving as things happen."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hublink.config import BackupSettings
from hublink.control import request
from hublink.devcloud import DevCloud
from hublink.devcloud.ports import free_port
from support.backup import make_database
from support.cli import make_child_env, run_hublink
from support.cloud import make_hub_env
from support.daemon import Daemons, HublinkProcess
from support.metrics import CONTRACT_SERIES, Scrape, parse, scrape_socket, scrape_tcp
from support.polling import wait_until
from support.timing import scaled

USER_SYNC = {"type": "user_sync", "data": {"users": [{"cloud_user_id": "7", "email": "a@b.co"}]}}


def _scrape_until(daemon: HublinkProcess, check: Callable[[Scrape], bool]) -> Callable[[], Any]:
    def probe() -> Scrape | None:
        daemon.assert_running()
        scrape = scrape_socket(daemon.settings.control_socket)
        return scrape if scrape is not None and check(scrape) else None

    return probe


@pytest.mark.slow
async def test_every_contract_series_moves_with_what_the_daemon_does(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    database = tmp_path / "hub.sqlite3"
    make_database(database, rows=50)
    hub = make_hub_env(
        devcloud,
        tmp_path,
        backup=BackupSettings(database=database),
        hooks={
            "user_revoked": ("/bin/true",),
            "plugin_update_available": ("/bin/false",),
            "backup_request": ("/bin/sleep", "30"),
        },
        hooks_timeout=scaled(0.3),
    )
    listen = f"127.0.0.1:{free_port()}"
    daemon = await daemons.start(hub, env={"HUBLINK_METRICS__LISTEN": listen})
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    for frame in (
        {"type": "user_revoked", "user_id": "7", "email": "a@b.co", "reason": "left"},
        {"type": "plugin_update_available", "plugin_id": "p", "current_version": "1",
         "new_version": "2", "download_url": "https://x.example/p"},
        {"type": "backup_request", "requested_by": "owner@example.com"},
        "this is not JSON",
        {"type": "user_revoked"},  # no fields: invalid, dropped
        {"type": "brand_new_type"},  # unknown: ignored, counted under its own name
    ):  # fmt: skip
        assert await devcloud.push(hub.hub_id, frame)
    sock = hub.settings.control_socket
    assert request(sock, "POST", "/v1/events", USER_SYNC)[0] == 201  # type: ignore[index]

    def settled(s: Scrape) -> bool:
        return (
            s.value("hublink_backups_total", result="completed") == 1
            and s.value("hublink_events_sent_total", type="backup_completed") == 1
            and s.value("hublink_events_sent_total", type="user_sync") == 1
            and s.value("hublink_hook_runs_total", type="backup_request", result="timeout") == 4
            and s.value("hublink_hook_runs_total", type="plugin_update_available", result="failed")
            == 4
        )

    scrape: Scrape = await wait_until(_scrape_until(daemon, settled), 30, "the metrics to settle")

    for name, (kind, labels) in CONTRACT_SERIES.items():
        assert scrape.types.get(name) == kind, name
        assert scrape.labels.get(name, {()}) <= {tuple(sorted(labels))}, name
    assert any(name.startswith("process_") for name in scrape.types)
    assert scrape.value("process_resident_memory_bytes", **{})
    assert scrape.value("hublink_link_up") == 1
    assert scrape.value("hublink_tunnel_up") == 0  # tunnel.enabled = false
    assert scrape.value("hublink_heartbeats_sent_total", **{}) >= 1  # type: ignore[operator]
    for kind in ("user_revoked", "plugin_update_available", "backup_request", "brand_new_type"):
        assert scrape.value("hublink_frames_received_total", type=kind) == 1, kind
    assert scrape.value("hublink_frames_received_total", type="invalid") == 2
    assert scrape.value("hublink_hook_runs_total", type="user_revoked", result="ok") == 1
    assert scrape.value("hublink_backups_total", result="failed") == 0
    assert scrape.value("hublink_backup_duration_seconds_count") == 1
    last_backup = scrape.value("hublink_last_backup_timestamp_seconds")
    assert last_backup and last_backup > 1.7e9
    assert scrape.value("hublink_outbox_pending") == 0
    assert scrape.value("hublink_outbox_oldest_age_seconds") == 0
    # The same registry on TCP, as Prometheus scrapes it.
    assert set(scrape_tcp(listen).types) == set(scrape.types)

    # The Cloud goes away: the link is down, events wait, their age grows, attempts count.
    await devcloud.stop()
    await wait_until(
        _scrape_until(daemon, lambda s: s.value("hublink_link_up") == 0), what="link_up 0"
    )
    assert request(sock, "POST", "/v1/events", USER_SYNC)[0] == 201  # type: ignore[index]
    waiting = await wait_until(
        _scrape_until(
            daemon,
            lambda s: (
                s.value("hublink_outbox_pending") == 1
                and (s.value("hublink_outbox_oldest_age_seconds") or 0) > 0
                and (s.value("hublink_link_reconnects_total") or 0) >= 1
            ),
        ),
        what="a waiting event and reconnection attempts",
    )
    assert waiting.value("hublink_frames_received_total", type="invalid") == 2
    await devcloud.start()
    await wait_until(
        _scrape_until(
            daemon,
            lambda s: (
                s.value("hublink_link_up") == 1
                and s.value("hublink_outbox_pending") == 0
                and s.value("hublink_outbox_oldest_age_seconds") == 0
                and s.value("hublink_events_sent_total", type="user_sync") == 2
            ),
        ),
        what="the queue drained after the Cloud came back",
    )

    # A restart keeps the last successful backup's time: an overdue backup stays visible.
    assert await daemon.terminate() == 0
    again = await daemons.start(hub)
    restarted: Scrape = await wait_until(
        _scrape_until(again, lambda s: s.value("hublink_link_up") is not None), what="a scrape"
    )
    assert restarted.value("hublink_last_backup_timestamp_seconds") == pytest.approx(
        last_backup, abs=1.0
    )
    assert restarted.value("hublink_backups_total", result="completed") == 0


async def test_a_busy_metrics_port_is_named_in_the_log_and_status_and_the_link_stays_up(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = make_hub_env(devcloud, tmp_path, backup=BackupSettings(schedule="03:30"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        daemon = await daemons.start(hub, env={"HUBLINK_METRICS__LISTEN": listen})
        status = await daemon.wait_status(
            lambda s: s["websocket"]["state"] == "connected" and s["next_backup_at"] is not None
        )
        await wait_until(lambda: devcloud.heartbeats(hub.hub_id), what="heartbeats")
    error = status["metrics"]["error"]
    assert status["metrics"]["listen"] == listen
    assert listen in error and "in use" in error and "metrics.listen" in error
    logged = [e for e in daemon.log_events() if e.get("event") == "metrics endpoint not served"]
    assert logged and logged[0]["level"] == "error" and logged[0]["error"] == error
    # The control socket serves the metrics all the same.
    scrape = scrape_socket(hub.settings.control_socket)
    assert scrape is not None and scrape.value("hublink_link_up") == 1
    # `hublink status` says it too, with the next scheduled backup.
    result = run_hublink("status", env=make_child_env(hub.settings), timeout=30)
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert f"metrics:    {error}" in shown
    next_at = status["next_backup_at"]
    assert next_at and f"next backup: {next_at} (backup.schedule)" in shown


async def test_without_metrics_listen_status_says_so_and_no_error(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = make_hub_env(devcloud, tmp_path)
    daemon = await daemons.start(hub)
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert status["metrics"] == {"listen": None, "error": None}
    assert status["next_backup_at"] is None  # no backup.schedule


# --- the registry itself, in process ----------------------------------------------


def test_each_daemon_has_its_own_registry_and_never_the_global_one() -> None:
    from prometheus_client import REGISTRY

    from hublink.metrics import Metrics

    one, two = Metrics(), Metrics()
    one.heartbeat_sent()
    assert parse(one.render()[0].decode()).value("hublink_heartbeats_sent_total") == 1
    assert parse(two.render()[0].decode()).value("hublink_heartbeats_sent_total") == 0
    assert REGISTRY.get_sample_value("hublink_heartbeats_sent_total") is None


def test_unknown_frame_types_get_a_bounded_number_of_series() -> None:
    from hublink.metrics import INVALID, MAX_UNKNOWN_TYPES, Metrics

    metrics = Metrics(inbound_types={"user_revoked"})
    for n in range(MAX_UNKNOWN_TYPES + 50):
        metrics.frame_received(f"new_type_{n}")
    for weird in ("Has Spaces", "x" * 65, "ünïcode", ""):
        metrics.frame_received(weird)
    scrape = parse(metrics.render()[0].decode())
    named = {
        dict(labels)["type"]
        for (name, labels) in scrape.samples
        if name == "hublink_frames_received_total"
    }
    assert len(named) == 2 + MAX_UNKNOWN_TYPES  # user_revoked, invalid, the first unknown ones
    assert scrape.value("hublink_frames_received_total", type=INVALID) == 50 + 4


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    from hublink.metrics import Metrics

    body, content_type = Metrics().render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    text, plain = Metrics().render(None)
    assert plain.startswith("text/plain; version=0.0.4")
    assert b"# EOF" not in text


def test_the_outbox_gauges_read_the_real_outbox_when_scraped(tmp_path: Path) -> None:
    from hublink.link.messages import BackupFailed
    from hublink.link.outbox import Outbox
    from hublink.metrics import Metrics

    outbox = Outbox.open(tmp_path)
    metrics = Metrics(outbox=outbox)
    empty = parse(metrics.render()[0].decode())
    assert (
        empty.value("hublink_outbox_pending"),
        empty.value("hublink_outbox_oldest_age_seconds"),
    ) == (0, 0)
    outbox.put(BackupFailed(error="x", requested_by="y"))
    outbox.put(BackupFailed(error="x", requested_by="y"))
    two = parse(metrics.render()[0].decode())
    assert two.value("hublink_outbox_pending") == 2
    assert 0 <= (two.value("hublink_outbox_oldest_age_seconds") or -1) < 60
    outbox.close()
    # A scrape during shutdown leaves them out rather than failing the whole answer.
    closed = parse(metrics.render()[0].decode())
    assert closed.value("hublink_outbox_pending") is None
    assert closed.value("hublink_link_up") == 0
