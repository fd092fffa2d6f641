"""Contract section 2 from the Cloud's side: the hubs' WebSocket endpoint."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler, Middleware

from hublink.devcloud.http import fail
from hublink.devcloud.records import Frame, Handshake, HubLink
from hublink.devcloud.state import STATE_KEY

log = structlog.get_logger(__name__)

#: How long a close handshake may take before the connection is just dropped.
CLOSE_TIMEOUT = 2.0
#: Close code and reason for the older of two sockets of the same hub.
REPLACED_CODE = 4000
#: The name of the hubs' WebSocket route, which :func:`handshake_recorder` watches.
HUB_SOCKET_ROUTE = "hub-socket"
#: The handshake record of the request being served, set by :func:`handshake_recorder`.
HANDSHAKE_KEY: web.RequestKey[Handshake] = web.RequestKey("hublink_handshake")


async def hub_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/hub/{hub_id}/?token=…``: one hub's link, until either side closes it."""
    cloud = request.app[STATE_KEY]
    hub = cloud.store.get_hub(cloud.normalize_id(request.match_info["hub_id"]) or "")
    token = request.query.get("token", "")
    # Refused before the upgrade, so the hub sees a plain HTTP status.
    if hub is None or not secrets.compare_digest(hub.tunnel_token.encode(), token.encode()):
        fail(401, "Unknown hub or invalid token")
    if hub.revoked:
        fail(403, "This hub has been revoked; register it again")

    socket = web.WebSocketResponse(max_msg_size=cloud.max_frame_size, timeout=CLOSE_TIMEOUT)
    await socket.prepare(request)
    if HANDSHAKE_KEY in request:
        request[HANDSHAKE_KEY].status = 101
    link = cloud.link(hub.hub_id)
    previous = link.socket
    link.socket = socket
    link.transport = request.transport
    link.connections += 1
    hub_log = log.bind(hub_id=hub.hub_id)
    hub_log.info("devcloud hub connected", connections=link.connections)
    if previous is not None and not previous.closed:
        # Quick even when the old peer is dead: its handler is reading, so
        # aiohttp sends the close frame and drops the connection without
        # waiting for an answer.
        await previous.close(code=REPLACED_CODE, message=b"replaced")
    try:
        await _receive(socket, link)
    finally:
        if link.socket is socket:
            link.socket = None
            link.transport = None
        link.close_codes.append(None if socket.close_code is None else int(socket.close_code))
        hub_log.info("devcloud hub disconnected", code=socket.close_code)
    return socket


async def _receive(socket: web.WebSocketResponse, link: HubLink) -> None:
    async for message in socket:
        if message.type is WSMsgType.TEXT:
            record_text(link, message.data)
        elif message.type is WSMsgType.BINARY:
            record_binary(link, message.data)


def record_text(link: HubLink, data: str) -> None:
    """Record one text frame: a heartbeat, an event (deduplicated by id), or junk."""
    now = datetime.now(UTC)
    message = _parse(data)
    link.frames.append(Frame(received_at=now, data=data, valid=message is not None))
    if message is None:
        log.warning("devcloud dropped an invalid frame", size=len(data))
        return
    if message["type"] == "heartbeat":
        link.last_heartbeat = now
        link.heartbeats.append({**message, "received_at": now})
        return
    event_id = message.get("id")
    if isinstance(event_id, str):
        if event_id in link.seen_ids:
            link.duplicates += 1
            return
        link.seen_ids.add(event_id)
    link.events.append(message)


def record_binary(link: HubLink, data: bytes) -> None:
    """Record a binary frame: the contract has none, so it is only kept for debugging."""
    link.frames.append(Frame(received_at=datetime.now(UTC), data=data, valid=False))
    log.warning("devcloud dropped a binary frame", size=len(data))


def _parse(data: str) -> dict[str, Any] | None:
    """The frame as a message object, or None when it is not one."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message


def handshake_recorder() -> Middleware:
    """A middleware noting every handshake's arrival and answer in the hub's ``handshakes``.

    Placed before the fault injection, so that injected refusals (a 503 with
    ``Retry-After``) are counted as the arrivals they are.
    """

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        cloud = request.app[STATE_KEY]
        hub_id = cloud.normalize_id(request.match_info.get("hub_id", ""))
        if request.match_info.route.name != HUB_SOCKET_ROUTE or hub_id is None:
            return await handler(request)
        attempt = Handshake(at=time.monotonic())
        cloud.link(hub_id).handshakes.append(attempt)
        request[HANDSHAKE_KEY] = attempt
        try:
            response = await handler(request)
        except web.HTTPException as err:
            attempt.status = err.status
            raise
        if attempt.status is None:
            attempt.status = response.status
        return response

    return record


def add_routes(app: web.Application) -> None:
    """Mount the WebSocket endpoint."""
    app.router.add_get("/ws/hub/{hub_id}/", hub_socket, name=HUB_SOCKET_ROUTE)
