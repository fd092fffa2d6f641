"""The admin HTTP API: look at hubs and act on them (a loopback dev server, no auth)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from hublink.devcloud.http import fail
from hublink.devcloud.records import HubRecord, iso
from hublink.devcloud.state import STATE_KEY


def _hub(request: web.Request) -> HubRecord:
    record = request.app[STATE_KEY].hub(request.match_info["hub_id"])
    if record is None:
        fail(404, "No hub with this id")
    return record


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda obj: json.dumps(obj, default=_iso))


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def list_hubs(request: web.Request) -> web.Response:
    """``GET /admin/hubs``: every hub with its link state, tokens left out."""
    return _json([record.public() for record in request.app[STATE_KEY].hubs()])


async def show_hub(request: web.Request) -> web.Response:
    """``GET /admin/hubs/{hub_id}``: one hub and counters of its link."""
    cloud = request.app[STATE_KEY]
    record = _hub(request)
    return _json(
        {
            **record.public(),
            "connections": cloud.connections(record.hub_id),
            "heartbeats": len(cloud.heartbeats(record.hub_id)),
            "events": len(cloud.events(record.hub_id)),
            "duplicates": cloud.duplicates(record.hub_id),
        }
    )


async def push_message(request: web.Request) -> web.Response:
    """``POST /admin/hubs/{hub_id}/messages``: send the JSON body to the hub as-is."""
    cloud = request.app[STATE_KEY]
    record = _hub(request)
    text = await request.text()
    try:
        json.loads(text)
    except ValueError:
        fail(400, "The body must be JSON; it is sent to the hub unchanged")
    if not await cloud.push(record.hub_id, text):
        fail(409, "The hub is not connected")
    return _json({"sent": True})


async def revoke_hub(request: web.Request) -> web.Response:
    """``POST /admin/hubs/{hub_id}/revoke``: revoke the hub and close its link with 4003."""
    cloud = request.app[STATE_KEY]
    record = _hub(request)
    await cloud.revoke(record.hub_id)
    updated = cloud.hub(record.hub_id)
    assert updated is not None
    return _json(updated.public())


async def hub_events(request: web.Request) -> web.Response:
    """``GET /admin/hubs/{hub_id}/events``: the events received, in order."""
    return _json(request.app[STATE_KEY].events(_hub(request).hub_id))


async def hub_heartbeats(request: web.Request) -> web.Response:
    """``GET /admin/hubs/{hub_id}/heartbeats``: the heartbeats received, with receive times."""
    return _json(request.app[STATE_KEY].heartbeats(_hub(request).hub_id))


async def hub_backups(request: web.Request) -> web.Response:
    """``GET /admin/hubs/{hub_id}/backups``: the stored backups."""
    records = request.app[STATE_KEY].backup_records(_hub(request).hub_id)
    return _json(
        [
            {
                "backup_id": backup.backup_id,
                "filename": backup.filename,
                "size": backup.size,
                "sha256": backup.sha256,
                "received_at": backup.received_at,
            }
            for backup in records
        ]
    )


def add_routes(app: web.Application) -> None:
    """Mount the admin API under ``/admin/``."""
    app.router.add_get("/admin/hubs", list_hubs)
    app.router.add_get("/admin/hubs/{hub_id}", show_hub)
    app.router.add_post("/admin/hubs/{hub_id}/messages", push_message)
    app.router.add_post("/admin/hubs/{hub_id}/revoke", revoke_hub)
    app.router.add_get("/admin/hubs/{hub_id}/events", hub_events)
    app.router.add_get("/admin/hubs/{hub_id}/heartbeats", hub_heartbeats)
    app.router.add_get("/admin/hubs/{hub_id}/backups", hub_backups)
