"""The daemon's Prometheus metrics (contract section 10): its registry, its series, its endpoint.

    metrics = Metrics(live=live, outbox=outbox)     # one per daemon, its own registry
    metrics.heartbeat_sent()                        # the tasks report what happens
    body, content_type = await metrics.exposition(request.headers.get("Accept"))

Series (names, types and labels are the contract's)::

    hublink_link_up                          gauge      1 while the WebSocket is connected
    hublink_link_reconnects_total            counter    connection attempts after the first
    hublink_heartbeats_sent_total            counter
    hublink_frames_received_total{type}      counter    Cloud→Hub frames; "invalid": dropped
    hublink_events_sent_total{type}          counter    Hub→Cloud events acknowledged
    hublink_outbox_pending                   gauge      events waiting
    hublink_outbox_oldest_age_seconds        gauge      0 when none waits
    hublink_tunnel_up                        gauge      1 while frpc's proxy runs (0: disabled)
    hublink_tunnel_restarts_total            counter
    hublink_backups_total{result}            counter    completed | failed
    hublink_backup_duration_seconds          histogram
    hublink_last_backup_timestamp_seconds    gauge      Unix time of the last successful one
    hublink_hook_runs_total{type,result}     counter    ok | failed | timeout

plus ``process_*`` and ``python_info``. Counters move where the event happens
(the link, the tunnel supervisor, the hooks, the dispatcher), each a dict
lookup and a locked add; what describes a state is read at scrape time instead
(link and tunnel up from the live state, the outbox from SQLite), so it costs
nothing between scrapes and never disagrees with ``hublink status``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hublink.addresses import split_listen
from hublink.errors import HublinkError

if TYPE_CHECKING:
    from aiohttp import web

    from hublink.link.outbox import Outbox
    from hublink.link.records import Notices
    from hublink.live import LiveState

log = structlog.get_logger(__name__)

#: ``type`` of a frame that was not JSON, not an object, had no type or failed validation.
INVALID = "invalid"
BACKUP_RESULTS = ("completed", "failed")
HOOK_RESULTS = ("ok", "failed", "timeout")
#: Cloud→Hub types hublink does not know get their own series, a few at most:
#: a Cloud that invents a type per frame must not grow the hub's memory.
MAX_UNKNOWN_TYPES = 16
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Backups take seconds (a small shop) to most of an hour (a slow uplink).
BACKUP_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Content type of ``GET /metrics`` when the scraper does not ask for OpenMetrics.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def last_backup_time(notices: Notices) -> datetime | None:
    """When the last successful backup recorded in the state dir ended (for
    ``hublink_last_backup_timestamp_seconds`` after a restart); None when there is
    none or its time is unreadable (logged)."""
    last = notices["last_completed_backup"]
    if last is None:
        return None
    try:
        return datetime.fromisoformat(last["at"])
    except (TypeError, ValueError):
        log.warning("the last backup's time in the state store is unreadable", at=last)
        return None


class Metrics:
    """One daemon's series on a registry of its own (not prometheus_client's global one).

    Args:
        live: the daemon's live state, read for ``link_up`` and ``tunnel_up`` at scrape time.
        outbox: the outbox, read for its depth and oldest age at scrape time.
        inbound_types: Cloud→Hub types shown at 0 before the first one arrives.
        event_types: Hub→Cloud event types shown at 0 before the first is acknowledged.
        hook_types: configured hooks, shown at 0 for every result before they first run.
        last_backup_at: the last successful backup recorded in the state dir, so that a
            restart does not hide an overdue backup.
    """

    def __init__(
        self,
        *,
        live: LiveState | None = None,
        outbox: Outbox | None = None,
        inbound_types: Iterable[str] = (),
        event_types: Iterable[str] = (),
        hook_types: Iterable[str] = (),
        last_backup_at: datetime | None = None,
    ) -> None:
        # `_created` series double the size of a scrape and no alert uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry()
        self._link_up = Gauge(
            "hublink_link_up", "1 while the WebSocket is connected", registry=registry
        )
        self._reconnects = Counter(
            "hublink_link_reconnects", "Connection attempts after the first", registry=registry
        )
        self._heartbeats = Counter(
            "hublink_heartbeats_sent", "Heartbeats sent to the Cloud", registry=registry
        )
        self._frames_family = Counter(
            "hublink_frames_received",
            'Cloud→Hub frames by type ("invalid": dropped)',
            ["type"],
            registry=registry,
        )
        self._events_family = Counter(
            "hublink_events_sent", "Hub→Cloud events acknowledged", ["type"], registry=registry
        )
        self._tunnel_up = Gauge(
            "hublink_tunnel_up", "1 while frpc is logged in and its proxy runs", registry=registry
        )
        self._tunnel_restarts = Counter(
            "hublink_tunnel_restarts", "frpc restarts", registry=registry
        )
        self._backups_family = Counter(
            "hublink_backups", "Backups by result", ["result"], registry=registry
        )
        self._backup_duration = Histogram(
            "hublink_backup_duration_seconds",
            "How long backups take, upload included",
            buckets=BACKUP_BUCKETS,
            registry=registry,
        )
        self._last_backup = Gauge(
            "hublink_last_backup_timestamp_seconds",
            "Unix time of the last successful backup",
            registry=registry,
        )
        self._hooks_family = Counter(
            "hublink_hook_runs",
            "Hook runs by type and result",
            ["type", "result"],
            registry=registry,
        )
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        if outbox is not None:
            registry.register(OutboxCollector(outbox))
        if live is not None:
            self._link_up.set_function(lambda: float(live.link.state == "connected"))
            self._tunnel_up.set_function(lambda: float(live.tunnel.state == "running"))
        if last_backup_at is not None:
            self._last_backup.set(last_backup_at.timestamp())
        # Children looked up by label, made once: a frame costs a dict lookup and an add.
        known = sorted({*inbound_types, INVALID})  # sorted: a stable order in every scrape
        self._frames = {name: self._frames_family.labels(name) for name in known}
        self._known_frames = len(self._frames)
        self._events = {name: self._events_family.labels(name) for name in event_types}
        self._backups = {name: self._backups_family.labels(name) for name in BACKUP_RESULTS}
        for hook_type in hook_types:
            for result in HOOK_RESULTS:
                self._hooks_family.labels(hook_type, result)

    # --- what happens ---------------------------------------------------------

    def heartbeat_sent(self) -> None:
        """A heartbeat left for the Cloud."""
        self._heartbeats.inc()

    def reconnecting(self) -> None:
        """The link tries again after losing (or never getting) its connection."""
        self._reconnects.inc()

    def frame_received(self, message_type: str) -> None:
        """A Cloud→Hub frame of ``message_type`` (:data:`INVALID` when dropped) arrived."""
        child = self._frames.get(message_type)
        if child is None:
            child = self._unknown_frame(message_type)
        child.inc()

    def _unknown_frame(self, message_type: str) -> Counter:
        if (
            _TYPE_NAME.fullmatch(message_type)
            and len(self._frames) < self._known_frames + MAX_UNKNOWN_TYPES
        ):
            child = self._frames[message_type] = self._frames_family.labels(message_type)
            return child
        return self._frames[INVALID]

    def events_acknowledged(self, types: Iterable[str]) -> None:
        """The Cloud acknowledged events of these types (one entry per event)."""
        for event_type, count in Tally(types).items():
            child = self._events.get(event_type)
            if child is None:
                child = self._events[event_type] = self._events_family.labels(event_type)
            child.inc(count)

    def tunnel_restarted(self) -> None:
        """frpc was started again after it exited."""
        self._tunnel_restarts.inc()

    def backup_finished(self, completed: bool, seconds: float) -> None:
        """A backup ended (refusals of a second concurrent one do not count)."""
        self._backups["completed" if completed else "failed"].inc()
        self._backup_duration.observe(seconds)
        if completed:
            self._last_backup.set(time.time())

    def hook_ran(self, message_type: str, result: str) -> None:
        """One run of the hook of ``message_type`` ended: ``ok``, ``failed`` or ``timeout``."""
        self._hooks_family.labels(message_type, result).inc()

    # --- exposition -------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape's body and content type (OpenMetrics when ``accept`` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """:meth:`render` in a worker thread: it reads SQLite and /proc."""
        return await asyncio.to_thread(self.render, accept)


class OutboxCollector(Collector):
    """``hublink_outbox_pending`` and ``_oldest_age_seconds``, read from the outbox when scraped."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def describe(self) -> list[Metric]:
        """The two families, without reading the outbox (registration checks names)."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        """Both gauges, from one locked read of the outbox."""
        try:
            pending, oldest = self._outbox.depth()
        except (HublinkError, sqlite3.Error) as err:
            # Closed during shutdown, or unreadable: a scrape without them says so by
            # their absence, and the log says why.
            log.warning("cannot read the outbox for the metrics", error=str(err))
            return
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        yield from self._families(pending, age)

    @staticmethod
    def _families(pending: float | None = None, age: float | None = None) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("hublink_outbox_pending", "Events waiting in the outbox")
        oldest = GaugeMetricFamily(
            "hublink_outbox_oldest_age_seconds", "Age of the oldest waiting event, 0 when none"
        )
        if pending is not None and age is not None:
            waiting.add_metric([], pending)
            oldest.add_metric([], age)
        yield waiting
        yield oldest


async def metrics_response(metrics: Metrics, request: web.Request) -> web.Response:
    """The answer to ``GET /metrics``, on the control socket and on ``metrics.listen``."""
    from aiohttp import web

    body, content_type = await metrics.exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


class MetricsServer:
    """``GET /metrics`` over TCP at ``metrics.listen``; an unbindable port is reported, not fatal.

    Attributes:
        listen: the configured ``HOST:PORT``.
        error: why it is not serving (``None`` while it is), for the log and ``status``.
    """

    def __init__(self, metrics: Metrics, listen: str) -> None:
        self.metrics = metrics
        self.listen = listen
        self.error: str | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; on failure set :attr:`error` and log it, and return (the daemon goes on)."""
        from aiohttp import web

        host, port = split_listen(self.listen)
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            await runner.cleanup()
            reason = (err.strerror or str(err)).lower()
            self.error = (
                f"cannot listen on metrics.listen {self.listen}: {reason}; "
                "set metrics.listen to a free port on an address of this box"
            )
            log.error("metrics endpoint not served", error=self.error, listen=self.listen)
            return
        self._runner = runner
        self.error = None
        log.info("metrics endpoint listening", listen=self.listen)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return await metrics_response(self.metrics, request)
