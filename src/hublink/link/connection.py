"""The WebSocket link to the Cloud: connect, heartbeat, receive, drain the outbox, reconnect.

One :class:`Link` runs for the daemon's lifetime. Each connection runs three
small loops that end with it: heartbeats, the outbox drain, and the receive
loop that hands every inbound message to the dispatcher. Between connections
the link waits according to :class:`Backoff` and to how the last one ended
(contract section 2): slowly when the Cloud refuses the credentials, after a
random spread when the Cloud went away, at least ``Retry-After`` when it asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl as ssl_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from hublink import __version__
from hublink.clock import utc_now
from hublink.link.messages import BadFrame, UnknownMessageType, heartbeat_frame, parse_inbound
from hublink.live import LinkStateName, LiveState
from hublink.logs import mask_text, register_secret
from hublink.metrics import INVALID, Metrics
from hublink.retry import (
    AUTH_CLOSE_CODES,
    AUTH_REFUSED_STATUSES,
    Backoff,
    is_transient,
    retry_after_of,
)

if TYPE_CHECKING:
    from hublink.config import Settings
    from hublink.credentials import Credentials

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
#: Bounded wait for the closing handshake, so that shutdown ends within its deadline.
CLOSE_TIMEOUT = 2.0
#: How much of a bad frame's description reaches the log.
LOGGED_FRAME_CHARS = 200


class OutboxItemLike(Protocol):
    """One queued event as the outbox hands it out."""

    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    @property
    def frame(self) -> str: ...


class LinkOutbox(Protocol):
    """What the link needs of the durable outbox (``hublink.link.outbox.AsyncOutbox``)."""

    wakeup: asyncio.Event

    async def peek(self, limit: int, after_seq: int = 0) -> Sequence[OutboxItemLike]: ...

    async def ack(self, up_to_seq: int) -> None: ...


class LinkDispatcher(Protocol):
    """What the link needs of the dispatcher (``hublink.link.dispatch.Dispatcher``)."""

    def dispatch(self, message: Any) -> None: ...


def ws_url(settings: Settings, creds: Credentials) -> str:
    """``ws(s)://host[:port]/ws/hub/{hub_id}/?token=…``; the token is a secret."""
    scheme = "wss" if settings.cloud_scheme == "https" else "ws"
    netloc = settings.cloud_url.split("://", 1)[1].rstrip("/")
    # Percent-encoded: a token with "+", "&" or "=" must reach the Cloud's query
    # parser unchanged ("+" would otherwise arrive as a space).
    token = quote(creds.tunnel_token.get_secret_value(), safe="")
    return f"{scheme}://{netloc}/ws/hub/{creds.hub_id}/?token={token}"


def open_handshake(
    settings: Settings,
    creds: Credentials,
    *,
    ssl: ssl_module.SSLContext | None,
    open_timeout: float | None = None,
) -> connect:
    """The link's WebSocket connection to the Cloud, not yet opened: await it or ``async with`` it.

    The one place that knows the link's URL, TLS, proxy (websockets reads
    ``HTTPS_PROXY``) and keepalive options; ``doctor`` opens its trial
    handshake here too. ``open_timeout`` (seconds) defaults to the ping timeout.
    """
    ws_cfg = settings.websocket
    return connect(
        ws_url(settings, creds),
        ssl=ssl if settings.cloud_scheme == "https" else None,
        user_agent_header=f"hublink/{__version__}",
        open_timeout=ws_cfg.ping_timeout if open_timeout is None else open_timeout,
        ping_interval=ws_cfg.ping_interval,
        ping_timeout=ws_cfg.ping_timeout,
        close_timeout=CLOSE_TIMEOUT,
        max_size=ws_cfg.max_message_size,
        # Frames are small JSON: deflate would cost CPU and a zlib context per link.
        compression=None,
    )


@dataclass(frozen=True)
class Outcome:
    """How one connection attempt ended, as the reconnect policy needs it."""

    error: str
    unauthorized: bool = False
    spread: bool = False
    retry_after: float | None = None
    uptime: float = 0.0
    permanent: bool = False


class Link:
    """The hub's WebSocket link to the Cloud; :meth:`run` keeps it up until cancelled."""

    def __init__(
        self,
        settings: Settings,
        creds: Credentials,
        live: LiveState,
        outbox: LinkOutbox,
        dispatcher: LinkDispatcher,
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
            return Outcome(error=_describe(err), permanent=not is_transient(err))
        return await self._serve(ws)

    def _refused(self, err: InvalidStatus) -> Outcome:

        status = err.response.status_code
        if status in AUTH_REFUSED_STATUSES:
            return Outcome(
                error=f"the Cloud refused the hub's credentials (HTTP {status})", unauthorized=True
            )
        retry_after = retry_after_of(err) if status in RETRY_AFTER_STATUSES else None
        return Outcome(
            error=f"the Cloud answered the handshake with HTTP {status}",
            retry_after=retry_after,
            permanent=not is_transient(err),
        )

    async def _serve(self, ws: ClientConnection) -> Outcome:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        self._live.set_link(
            "connected", last_error=None, next_attempt_at=None, connected_since=utc_now()
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
        with contextlib.suppress(ConnectionClosed):
            while True:
                # Clear before peeking: a put() after the peek sets it again.
                outbox.wakeup.clear()
                items = await outbox.peek(DRAIN_BATCH, after_seq=last_sent)
                if not items:
                    await outbox.wakeup.wait()
                    continue
                for item in items:
                    await ws.send(item.frame)
                last_sent = items[-1].seq
                # At-least-once: the Cloud has read every frame sent before this pong.
                pong = await ws.ping()
                await pong
                await outbox.ack(last_sent)
                self._metrics.events_acknowledged(item.type for item in items)
                log.debug("outbox events delivered", count=len(items), up_to=last_sent)

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
        if outcome.uptime >= self._stable_after:
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
            if outcome.spread:
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


def _describe(err: BaseException) -> str:
    """A short, secret-free description of a connection failure."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    elif isinstance(err, TimeoutError):
        text = "timed out opening the connection"
    return mask_text(f"{type(err).__name__}: {text}"[:LOGGED_FRAME_CHARS])
