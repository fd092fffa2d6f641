"""Measuring a fault: events queued through it, and when the hub noticed and recovered.

    daemon = await linked(daemons, hub)                  # a daemon, link up and beating
    watch = await LinkWatch(daemon).start()            # samples websocket.state
    async with Producer(hub) as events:                # queues user_sync events all along
        fault_at = watch.now()
        proxy.blackhole()
        detected = await watch.left_connected(fault_at)           # seconds
        recovered = await back_online(hub, fault_at + detected)   # seconds
    assert await events.settle() == []                 # nothing lost

Times are ``time.monotonic()`` seconds of the test process; the Cloud's
handshake records (:attr:`hublink.devcloud.records.Handshake.at`) use the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

from hublink.config import WebSocketSettings
from hublink.control import poke, request, status_now
from hublink.devcloud import DevCloud
from hublink.link.events import queue_event
from hublink.link.notices import StateStore
from hublink.link.outbox import Outbox
from support.cloud import HubEnv, make_hub_env
from support.daemon import Daemons, HublinkProcess
from support.polling import POLL
from support.reliability import run_form
from support.timing import scaled

#: Link timings of the fault suite: a silent link is found within
#: ping_interval + ping_timeout (1.5 s); a lost one comes back within the spread.
#: Stretched by ``HUBLINK_TEST_TIME_FACTOR`` like every timing the tests choose.
FAULT_WEBSOCKET: dict[str, float] = {
    "heartbeat_interval": scaled(0.2),
    "reconnect_min": scaled(0.1),
    "reconnect_max": scaled(1.0),
    "reconnect_spread": scaled(0.5),
    "unauthorized_retry": scaled(1.0),
    "ping_interval": scaled(0.5),
    "ping_timeout": scaled(1.0),
}

#: What the daemon logs when it gives a link up (connection.py, ``_wait_after``).
LINK_LOST = "link lost; reconnecting"
#: What a shared 2-core box adds to any timing goal: scheduling, polling, process start.
SLACK = scaled(1.0)


def full_size() -> bool:
    """Whether this is ``make faults`` (``HUBLINK_FAULTS_FULL=1``) rather than CI's short form."""
    return run_form() == "full"


def sized(short: Any, full: Any) -> Any:
    """``full`` under ``make faults``, ``short`` otherwise."""
    return full if full_size() else short


def fault_hub(
    cloud: DevCloud,
    base: Path,
    url: str | None = None,
    *,
    websocket: dict[str, float] | None = None,
    **overrides: Any,
) -> HubEnv:
    """A hub of ``cloud`` with the fault suite's link timings, reaching it at ``url``.

    ``websocket`` changes some of :data:`FAULT_WEBSOCKET`; ``overrides`` are
    other ``Settings`` fields (a backup database, a tunnel).
    """
    timings = WebSocketSettings(**(FAULT_WEBSOCKET | (websocket or {})))
    hub = make_hub_env(cloud, base, websocket=timings, **overrides)
    if url is None:
        return hub
    settings = hub.settings.model_copy(update={"cloud_url": url})
    return HubEnv(settings=settings, creds=hub.creds, cloud=cloud)


async def linked(daemons: Daemons, hub: HubEnv, **kwargs: Any) -> HublinkProcess:
    """Start a daemon for ``hub`` and wait until its link is up and beating."""
    daemon: HublinkProcess = await daemons.start(hub, **kwargs)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
    await hub.cloud.wait_for(lambda: bool(hub.cloud.heartbeats(hub.hub_id)), timeout=30)
    return daemon


class Producer:
    """The Hub application: queues a ``user_sync`` event every ``interval`` seconds.

    ``via="control"`` posts to the daemon's ``POST /v1/events`` (a refusal,
    503 or no daemon, is counted in :attr:`refused`: the caller knows it was
    not queued, so it is not lost); ``via="send"`` does what ``hublink send``
    does, which works with no daemon: queue durably, then poke.
    """

    def __init__(
        self,
        hub: HubEnv,
        *,
        interval: float = 0.05,
        via: Literal["control", "send"] = "control",
    ) -> None:
        self.hub = hub
        self.interval = interval
        self.via = via
        #: Ids of the events queued, in the order they were queued.
        self.accepted: list[str] = []
        #: Events the daemon refused or could not take (never queued).
        self.refused = 0
        #: The refusals' answers, for the assertions about their wording.
        self.refusals: list[Any] = []
        self._number = 0
        self._task: asyncio.Task[None] | None = None
        self._paused = asyncio.Event()

    async def __aenter__(self) -> Producer:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop queuing (the events queued stay queued)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.queue_one)
            await asyncio.sleep(self.interval)

    def queue_one(self) -> str | None:
        """Queue the next event now (blocking); its id, or None if it was refused."""
        self._number += 1
        data = {
            "users": [
                {"cloud_user_id": f"probe-{self._number}", "email": f"p{self._number}@example.com"}
            ],
            "probe": self._number,
        }
        settings = self.hub.settings
        if self.via == "send":
            outbox = Outbox.for_settings(settings)
            notices = StateStore.load(settings.state_dir)
            try:
                event_id = queue_event(outbox, notices, "user_sync", data)
            finally:
                outbox.close()
                notices.close()
            poke(settings.control_socket)
        else:
            answer = request(
                settings.control_socket, "POST", "/v1/events", {"type": "user_sync", "data": data}
            )
            if answer is None or answer[0] != 201:
                self.refused += 1
                self.refusals.append(answer)
                return None
            event_id = answer[1]["id"]
        self.accepted.append(event_id)
        return event_id

    # --- what the Cloud got ------------------------------------------------------

    def arrived(self) -> list[str]:
        """Ids of this producer's events at the Cloud, in first-arrival order."""
        mine = set(self.accepted)
        events = self.hub.cloud.events(self.hub.hub_id)
        return [event["id"] for event in events if event.get("id") in mine]

    def lost(self) -> list[str]:
        """Ids queued that the Cloud never got."""
        arrived = set(self.arrived())
        return [event_id for event_id in self.accepted if event_id not in arrived]

    def in_order(self) -> bool:
        """Whether the events first arrived in the order they were queued."""
        return self.arrived() == [i for i in self.accepted if i in set(self.arrived())]

    def duplicates(self) -> int:
        """Events the Cloud received more than once (allowed: delivery is at-least-once)."""
        return self.hub.cloud.duplicates(self.hub.hub_id)

    async def settle(self, timeout: float = 30.0) -> list[str]:
        """Wait until every queued event arrived (or ``timeout``); the ids still missing."""
        deadline = time.monotonic() + timeout
        while (missing := self.lost()) and time.monotonic() < deadline:
            await asyncio.sleep(POLL * 5)
        return missing


class LinkSample(NamedTuple):
    """One reading of the daemon's ``websocket`` object."""

    at: float
    #: None when the daemon did not answer.
    state: str | None
    error: str | None
    #: ``websocket.reconnects``: connection attempts after the first.
    reconnects: int


class LinkWatch:
    """Samples a daemon's ``websocket`` status every few tens of milliseconds.

    A drop is seen by the state leaving ``connected`` or, when the link came
    back between two samples, by the ``reconnects`` counter moving.
    """

    def __init__(self, daemon: HublinkProcess, period: float = 0.05) -> None:
        self.daemon = daemon
        self.period = period
        self.samples: list[LinkSample] = []
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def now() -> float:
        """The clock every figure is measured on."""
        return time.monotonic()

    async def start(self) -> LinkWatch:
        """Start sampling; returns once the first sample is in."""
        self._task = asyncio.create_task(self._run())
        await _poll(lambda: 0.0 if self.samples else None, 30.0, "a first status sample")
        return self

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        path = self.daemon.settings.control_socket
        last = 0
        while True:
            status = await asyncio.to_thread(status_now, path)
            if status is None:
                self.samples.append(LinkSample(time.monotonic(), None, None, last))
            else:
                link = status["websocket"]
                last = link["reconnects"] or 0
                self.samples.append(
                    LinkSample(time.monotonic(), link["state"], link["last_error"], last)
                )
            await asyncio.sleep(self.period)

    def _baseline(self, since: float) -> int:
        before = [s.reconnects for s in self.samples if s.at < since]
        return before[-1] if before else 0

    async def left_connected(self, since: float, timeout: float = 30.0) -> float:
        """Seconds from ``since`` until the daemon gave the link up: detection.

        Read from the daemon's own log line ("link lost; reconnecting", with its
        time stamp), which a quick return between two status samples cannot hide.

        Raises:
            TimeoutError: the link still looked up after ``timeout`` seconds.
        """
        # The log's stamps are wall-clock time; this process's clock is monotonic.
        since_wall = since + (time.time() - time.monotonic())

        def found() -> float | None:
            for event in self.daemon.log_events():
                if event.get("event") != LINK_LOST:
                    continue
                stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                if stamp.timestamp() >= since_wall:
                    return max(0.0, stamp.timestamp() - since_wall)
            return None

        return await _poll(found, timeout, "the daemon to notice the fault", period=0.1)

    async def error_seen(self, since: float, words: str, timeout: float = 30.0) -> float:
        """Seconds from ``since`` to the first sample whose ``last_error`` contains ``words``.

        Raises:
            TimeoutError: no such error within ``timeout`` seconds.
        """

        def found() -> float | None:
            for sample in self.samples:
                if sample.at >= since and sample.error is not None and words in sample.error:
                    return sample.at - since
            return None

        return await _poll(found, timeout, f"a last_error with {words!r}")

    def errors(self, since: float) -> list[str]:
        """The distinct ``last_error`` values seen after ``since``, in order."""
        seen: list[str] = []
        for sample in self.samples:
            if sample.at >= since and sample.error is not None and sample.error not in seen:
                seen.append(sample.error)
        return seen

    def states(self, since: float) -> set[str | None]:
        """Every ``websocket.state`` seen after ``since`` (None: the daemon did not answer)."""
        return {sample.state for sample in self.samples if sample.at >= since}

    def reconnects(self, since: float) -> int:
        """How many times the link was lost after ``since`` (0: it held)."""
        answered = [s.reconnects for s in self.samples if s.at >= since and s.state is not None]
        return (answered[-1] - self._baseline(since)) if answered else 0


async def back_online(hub: HubEnv, since: float, timeout: float = 30.0) -> float:
    """Seconds from ``since`` to the first handshake the Cloud accepted after it: recovery.

    Returns once that link has also carried a heartbeat.

    Raises:
        TimeoutError: the hub did not come back within ``timeout`` seconds.
    """
    cloud = hub.cloud
    beats_before = len(cloud.heartbeats(hub.hub_id))

    def found() -> float | None:
        accepted = [h.at for h in cloud.handshakes(hub.hub_id) if h.status == 101 and h.at >= since]
        if not accepted or len(cloud.heartbeats(hub.hub_id)) <= beats_before:
            return None
        return accepted[0] - since

    return await _poll(found, timeout, "the hub to come back")


async def within(probe: Callable[[], Any], timeout: float) -> Any:
    """``probe()``'s first truthy value within ``timeout`` seconds (scaled), or None."""
    deadline = time.monotonic() + scaled(timeout)
    while not (value := probe()):
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL)
    return value


async def _poll(probe: Any, timeout: float, what: str, period: float = POLL) -> float:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = probe()
        if value is not None:
            return float(value)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout} s for {what}, in vain")
        await asyncio.sleep(period)
