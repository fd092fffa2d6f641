"""The WebSocket link to the Cloud: connect, heartbeat, receive, drain the outbox, reconnect.

One :class:`Link` runs for the daemon's lifetime. Each connection runs three
small loops that end with it: heartbeats, the outbox drain, and the receive
loop that hands every inbound message to the dispatcher. Between connections
the link waits according to :class:`Backoff` and to how the last one ended
(contract section 2): slowly when the Cloud refuses the credentials, after a
random spread when the Cloud went away, at least ``Retry-After`` when it asked
(never more than the slow retry of a refused hub), and with a growing backoff
when the link dropped while events it had sent were not acknowledged yet.

What comes from the Cloud costs at most itself: a frame that cannot be read
is logged and dropped; an event the Cloud drops the link for is sent alone
at the next connection, and set aside as a dead letter after
:data:`~hublink.link.outbox.MAX_DELIVERY_ATTEMPTS` sends. A full disk that
keeps delivered events from leaving the outbox is reported in ``last_error``
and retried while the link stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import ssl as ssl_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from hublink.clock import describe_duration, utc_now
from hublink.errors import OutboxError
from hublink.link.handshake import describe_failure, open_handshake
from hublink.link.messages import BadFrame, UnknownMessageType, heartbeat_frame, parse_inbound
from hublink.link.outbox import MAX_DELIVERY_ATTEMPTS
from hublink.live import LinkStateName, LiveState
from hublink.logs import mask_text, register_secret
from hublink.metrics import INVALID, Metrics
from hublink.retry import (
    AUTH_CLOSE_CODES,
    AUTH_REFUSED_STATUSES,
    Backoff,
    headers_of,
    is_transient,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from hublink.config import Settings
    from hublink.credentials import Credentials
    from hublink.link.dispatch import Dispatcher
    from hublink.link.outbox import AsyncOutbox, OutboxItem

log = structlog.get_logger(__name__)

#: A link that stayed up this long resets the backoff (contract: "a minute").
STABLE_AFTER = 60.0
#: Close codes after which the whole fleet reconnects at once unless spread out:
#: going away, service restart, try again later, and a TCP drop without close frame.
SPREAD_CLOSE_CODES = frozenset({1001, 1012, 1013, 1006})
#: Handshake answers whose ``Retry-After`` is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: How many outbox events go out between two acknowledging pings.
DRAIN_BATCH = 500
#: How much of a bad frame's description reaches the log.
LOGGED_FRAME_CHARS = 200


@dataclass(frozen=True)
class Outcome:
    """How one connection attempt ended, as the reconnect policy needs it."""

    error: str
    unauthorized: bool = False
    spread: bool = False
    retry_after: float | None = None
    uptime: float = 0.0
    permanent: bool = False
    #: The link dropped while sent events waited for their acknowledgement.
    in_flight: bool = False


class Link:
    """The hub's WebSocket link to the Cloud; :meth:`run` keeps it up until cancelled."""

    def __init__(
        self,
        settings: Settings,
        creds: Credentials,
        live: LiveState,
        outbox: AsyncOutbox,
        dispatcher: Dispatcher,
        *,
        ssl: ssl_module.SSLContext | None = None,
        stable_after: float = STABLE_AFTER,
        rand: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        #: Heartbeats, frames, acknowledged events, reconnects (a private set when not given).
        self._metrics = metrics if metrics is not None else Metrics(live=live)
        self._ws_settings = settings.websocket
        self._creds = creds
        self._live = live
        self._outbox = outbox
        self._dispatcher = dispatcher
        self._ssl = ssl
        self._stable_after = stable_after
        self._rand = rand
        self._backoff = Backoff(
            settings.websocket.reconnect_min, settings.websocket.reconnect_max, rand=rand
        )
        #: Sent events whose acknowledgement has not come back yet.
        self._in_flight = False
        #: The error the outbox reported last, while it lasts (shown as last_error).
        self._outbox_error: str | None = None
        register_secret(creds.tunnel_token.get_secret_value())

    async def run(self) -> None:
        """Connect, serve, and reconnect forever; close with 1001 when cancelled."""
        attempts = 0
        try:
            while True:
                if attempts:
                    self._live.link.reconnects = attempts
                    self._metrics.reconnecting()
                attempts += 1
                # A retry while unauthorized stays "unauthorized" until it succeeds.
                state = self._live.link.state
                self._live.set_link(
                    "unauthorized" if state == "unauthorized" else "connecting",
                    next_attempt_at=None,
                )
                outcome = await self._connect_once()
                await self._wait_after(outcome)
        finally:
            self._live.set_link("stopped", next_attempt_at=None, connected_since=None)

    # --- one connection -----------------------------------------------------

    async def _connect_once(self) -> Outcome:
        try:
            ws = await open_handshake(self._settings, self._creds, ssl=self._ssl)
        except InvalidStatus as err:
            return self._refused(err)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # Imported on the failure path only: hublink.retry pulls in aiohttp, which
            # the idle link does not otherwise need (the idle footprint is benchmarked).

            # Permanent ones (a certificate that does not verify, …) are retried too, but loudly.
            return Outcome(error=describe_failure(err), permanent=not is_transient(err))
        return await self._serve(ws)

    def _refused(self, err: InvalidStatus) -> Outcome:

        status = err.response.status_code
        if status in AUTH_REFUSED_STATUSES:
            return Outcome(
                error=f"the Cloud refused the hub's credentials (HTTP {status})", unauthorized=True
            )
        error = f"the Cloud answered the handshake with HTTP {status}"
        retry_after = None
        if status in RETRY_AFTER_STATUSES:
            # Honoured as a minimum, but never longer than the slow retry of a refused
            # hub: a Cloud (or a proxy) asking for days must not park the hub for days.
            cfg = self._ws_settings
            limit = max(cfg.unauthorized_retry, cfg.reconnect_max)
            headers = headers_of(err)
            retry_after = retry_after_seconds(headers, limit=limit)
            raw = mask_text(str(headers.get("Retry-After", ""))[:40])
            if raw:
                error += f" (Retry-After: {raw!r}"
                error += (
                    ", not a delay hublink can read)"
                    if retry_after is None
                    else f"; waiting {describe_duration(retry_after)}, at most "
                    f"{describe_duration(limit)})"
                )
        return Outcome(error=error, retry_after=retry_after, permanent=not is_transient(err))

    async def _serve(self, ws: ClientConnection) -> Outcome:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        self._in_flight = False
        self._live.set_link(
            "connected",
            last_error=self._outbox_error,
            next_attempt_at=None,
            connected_since=utc_now(),
        )
        log.info("link connected", reconnects=self._live.link.reconnects)
        try:
            async with asyncio.TaskGroup() as group:
                beats = group.create_task(self._heartbeats(ws))
                drain = group.create_task(self._drain(ws))
                try:
                    await self._receive(ws)
                finally:
                    beats.cancel()
                    drain.cancel()
        finally:
            # Shutdown (or a crash of one loop): say goodbye with 1001 rather than
            # websockets' default 1000, within CLOSE_TIMEOUT.
            if ws.state is State.OPEN:
                await _goodbye(ws)
        return self._closed(ws, loop.time() - opened)

    def _closed(self, ws: ClientConnection, uptime: float) -> Outcome:
        outcome = self._how_it_closed(ws, uptime)
        if self._in_flight:
            # Dropped while sent events waited for their acknowledgement: maybe for
            # one of them. Not a Cloud restart to spread out: a failure to back off from.
            return dataclasses.replace(outcome, in_flight=True, spread=False)
        return outcome

    def _how_it_closed(self, ws: ClientConnection, uptime: float) -> Outcome:
        rcvd = ws.protocol.close_rcvd
        sent = ws.protocol.close_sent
        if sent is not None and sent.code == 1011 and rcvd is None:
            # websockets' keepalive gave up: the peer is gone, as good as a TCP drop.
            return Outcome(error="the Cloud stopped answering pings", spread=True, uptime=uptime)
        if sent is not None and (rcvd is None or not ws.protocol.close_rcvd_then_sent):
            # hublink closed first: 1009 for a frame over max_message_size, for one.
            detail = f" ({sent.reason})" if sent.reason else ""
            return Outcome(error=f"hublink closed the link: {sent.code}{detail}", uptime=uptime)
        if rcvd is None:
            error = "the connection dropped without a close frame (1006)"
            return Outcome(error=error, spread=True, uptime=uptime)
        reason = mask_text(rcvd.reason[:LOGGED_FRAME_CHARS])
        return Outcome(
            error=f"the Cloud closed the link: {rcvd.code}" + (f" ({reason})" if reason else ""),
            unauthorized=rcvd.code in AUTH_CLOSE_CODES,
            spread=rcvd.code in SPREAD_CLOSE_CODES,
            uptime=uptime,
        )

    async def _heartbeats(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        interval = self._ws_settings.heartbeat_interval
        due = loop.time()
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(heartbeat_frame())
                self._live.link.last_heartbeat_at = utc_now()
                self._metrics.heartbeat_sent()
                # Scheduled from the first beat, so a slow send never makes them drift.
                due += interval
                now = loop.time()
                due = max(due, now)
                await asyncio.sleep(due - now)

    async def _drain(self, ws: ClientConnection) -> None:
        outbox = self._outbox
        last_sent = 0
        # Delivered (the Cloud answered the ping after them) but not yet removed.
        unremoved: int | None = None
        retry = Backoff(self._ws_settings.reconnect_min, self._ws_settings.reconnect_max)
        with contextlib.suppress(ConnectionClosed):
            while True:
                # Clear before peeking: a put() after the peek sets it again.
                outbox.wakeup.clear()
                await self._send_held(ws)
                if unremoved is not None and await self._remove(unremoved):
                    unremoved = None
                    retry.reset()
                items = await outbox.peek(DRAIN_BATCH, after_seq=last_sent)
                if not items:
                    # A put or a poke wakes it; so does the clock. The removal is
                    # retried with backoff while the link stays up, and an empty
                    # outbox is looked at again every heartbeat interval: an event
                    # another process wrote without a poke (`hublink send` while the
                    # control socket is not open yet) leaves then, not never.
                    idle = self._ws_settings.heartbeat_interval
                    # asyncio.timeout: wait_for can lose a cancel on 3.11 (gh-86296).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle if unremoved is None else retry.next()):
                            await outbox.wakeup.wait()
                    continue
                if items[0].attempts >= MAX_DELIVERY_ATTEMPTS and await self._set_aside(items[0]):
                    continue
                batch = _next_batch(items)
                await self._send(ws, batch)
                last_sent = batch[-1].seq
                if not await self._remove(last_sent):
                    unremoved = last_sent
                log.debug("outbox events delivered", count=len(batch), up_to=last_sent)

    async def _send(self, ws: ClientConnection, batch: Sequence[OutboxItem]) -> None:
        """Send ``batch`` and wait until the Cloud has read it (the pong after it)."""
        try:
            await self._outbox.mark_sent([item.seq for item in batch])
        except OutboxError as err:
            # Counting sends guards against a poison event; delivery matters more.
            log.warning("cannot count the sends of outbox events", error=str(err))
        self._in_flight = True
        for item in batch:
            await ws.send(item.frame)
        # At-least-once: the Cloud has read every frame sent before this pong.
        pong = await ws.ping()
        await pong
        self._in_flight = False
        self._metrics.events_acknowledged(item.type for item in batch)

    async def _send_held(self, ws: ClientConnection) -> None:
        """Send the answers that could not be stored (a full disk), then forget them."""
        held = self._outbox.held()
        if not held:
            return
        self._in_flight = True
        for frame in held:
            await ws.send(frame)
        pong = await ws.ping()
        await pong
        self._in_flight = False
        self._outbox.release_held(len(held))
        # Rare (answers kept in memory while the disk was full): reading their type is cheap.
        self._metrics.events_acknowledged(json.loads(frame)["type"] for frame in held)
        log.info("answers that could not be stored were delivered", count=len(held))

    async def _remove(self, up_to_seq: int) -> bool:
        """Remove delivered events from the outbox; whether it worked (else: retried later)."""
        try:
            await self._outbox.ack(up_to_seq)
        except OutboxError as err:
            # A full disk must not take the link down: heartbeats and commands go
            # on; these events are not sent again on this link, and at worst once
            # more on the next one (the Cloud drops duplicates by id).
            error = f"delivered events cannot be removed from the outbox: {err.message}"
            if error != self._outbox_error:
                log.error(error, hint=err.hint)
            self._outbox_error = error
            self._live.set_link(self._live.link.state, last_error=error)
            return False
        if self._outbox_error is not None:
            log.info("the outbox is writable again; delivered events removed")
            if self._live.link.last_error == self._outbox_error:
                self._live.set_link(self._live.link.state, last_error=None)
            self._outbox_error = None
        return True

    async def _set_aside(self, item: OutboxItem) -> bool:
        """Move ``item`` to the dead letters; whether that worked (else it is sent again)."""
        reason = (
            f"the link dropped each of the {item.attempts} times this event was sent: "
            "the Cloud does not accept it"
        )
        try:
            await self._outbox.dead_letter(item.seq, reason)
        except OutboxError as err:
            # Sent once more rather than never; the growing backoff keeps that slow.
            log.error("cannot set an undeliverable event aside", event_id=item.id, error=str(err))
            return False
        log.error(
            "an event the Cloud keeps refusing was set aside as a dead letter; "
            "the events after it go on",
            event_id=item.id,
            attempts=item.attempts,
            hint="`hublink status` counts dead letters; they stay in outbox.sqlite3 "
            "(table dead_letters) for inspection",
        )
        return True

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            metrics = self._metrics
            async for frame in ws:
                try:
                    message = parse_inbound(frame)
                except UnknownMessageType as err:
                    metrics.frame_received(err.message_type or INVALID)
                    log.warning("ignored a message of unknown type", reason=str(err))
                    continue
                except BadFrame as err:
                    metrics.frame_received(INVALID)
                    log.warning("dropped a malformed frame", reason=str(err)[:LOGGED_FRAME_CHARS])
                    continue
                except Exception:
                    # Whatever else reading one frame can raise costs that frame only,
                    # never the link; the traceback says what to fix.
                    metrics.frame_received(INVALID)
                    log.exception("dropped a frame that could not be read")
                    continue
                metrics.frame_received(message.type)
                try:
                    self._dispatcher.dispatch(message)
                except Exception:
                    # A handler bug must not take the link down; it is logged with its traceback.
                    log.exception("dispatching a message failed")

    # --- between connections ------------------------------------------------

    async def _wait_after(self, outcome: Outcome) -> None:
        cfg = self._ws_settings
        state: LinkStateName
        if outcome.uptime >= self._stable_after and not outcome.in_flight:
            self._backoff.reset()
        if outcome.unauthorized:
            delay = cfg.unauthorized_retry
            state = "unauthorized"
            log.error(
                "the Cloud no longer accepts this hub's credentials; re-register it with "
                "`hublink register --force`",
                reason=outcome.error,
                retry_in=round(delay, 3),
            )
        else:
            state = "backoff"
            if outcome.spread and not outcome.in_flight:
                # The first attempt after the Cloud went away: anywhere in the spread window,
                # so that a fleet does not come back in the same second. Failures after it
                # continue the usual backoff.
                delay = self._rand() * min(cfg.reconnect_spread, cfg.reconnect_max)
            else:
                delay = self._backoff.next()
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            report = log.error if outcome.permanent else log.warning
            report("link lost; reconnecting", reason=outcome.error, retry_in=round(delay, 3))
        self._live.set_link(
            state,
            last_error=mask_text(outcome.error),
            next_attempt_at=utc_now() + timedelta(seconds=delay),
            connected_since=None,
        )
        await asyncio.sleep(delay)


def _next_batch(items: Sequence[OutboxItem]) -> Sequence[OutboxItem]:
    """What to send next: a suspect alone, else every event not sent before, in order.

    An event already sent without acknowledgement (the link dropped) goes out
    alone: if the Cloud drops the link for it, only its own count grows.
    """
    if items[0].attempts:
        return items[:1]
    for index, item in enumerate(items):
        if item.attempts:
            return items[:index]
    return items


async def _goodbye(ws: ClientConnection) -> None:
    """Close with 1001; a second cancellation (forced exit) drops the connection at once."""
    try:
        await ws.close(1001, "hub shutting down")
    except asyncio.CancelledError:
        ws.transport.abort()
        raise
    except Exception:
        # Closing a connection that is failing anyway: nothing left to report.
        log.debug("closing the link failed", exc_info=True)
