"""The reference Cloud, over real HTTP and real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hublink.credentials import CredentialStore
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, CloudOptions, DevCloud, ws
from support.cli import HUBLINK_COMMAND
from support.cloud import HubEnv
from support.polling import wait_until

OWNER = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    async with http.post(url, json=body, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def _access(http: aiohttp.ClientSession, cloud: DevCloud) -> str:
    status, body = await _post(http, f"{cloud.url}/api/auth/login/", OWNER)
    assert status == 200
    return str(body["access"])


async def _register(
    http: aiohttp.ClientSession, cloud: DevCloud, body: Any, token: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    return await _post(http, f"{cloud.url}/api/hubs/register/", body, headers=headers)


async def _connect(env: HubEnv) -> ClientConnection:
    return await websockets.connect(env.cloud.ws_url(env.hub_id, env.token))


async def _closed_code(socket: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await socket.recv()
    return None if closed.value.rcvd is None else closed.value.rcvd.code


# --- REST -------------------------------------------------------------------


async def test_login_returns_tokens_and_user(
    devcloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{devcloud.url}/api/auth/login/", json=OWNER) as response:
        body = await response.json()
        assert response.status == 200
        assert response.headers["Date"]
    assert set(body) == {"access", "refresh", "user"}
    assert body["user"]["email"] == DEMO_EMAIL
    assert isinstance(body["user"]["id"], int)


@pytest.mark.parametrize(
    ("body", "status", "key"),
    [
        ({"email": DEMO_EMAIL, "password": "wrong"}, 401, "detail"),
        ({"email": "nobody@example.com", "password": DEMO_PASSWORD}, 401, "detail"),
        ({"email": DEMO_EMAIL}, 400, "password"),
    ],
)
async def test_login_refuses_wrong_credentials(
    devcloud: DevCloud, http: aiohttp.ClientSession, body: Any, status: int, key: str
) -> None:
    got_status, got = await _post(http, f"{devcloud.url}/api/auth/login/", body)
    assert (got_status, list(got)) == (status, [key])


async def test_refresh_trades_a_refresh_token_only(
    devcloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    _, tokens = await _post(http, f"{devcloud.url}/api/auth/login/", OWNER)
    url = f"{devcloud.url}/api/auth/refresh/"

    status, body = await _post(http, url, {"refresh": tokens["refresh"]})
    assert status == 200
    assert set(body) == {"access", "refresh"}
    assert (await _register(http, devcloud, {"name": "Shop"}, body["access"]))[0] == 201

    assert (await _post(http, url, {"refresh": tokens["access"]}))[0] == 401
    assert (await _post(http, url, {"refresh": "not.a.jwt"}))[0] == 401


async def test_public_key_verifies_the_access_token(
    devcloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    access = await _access(http, devcloud)
    async with http.get(f"{devcloud.url}/api/auth/public-key/") as response:
        key = await response.json()
    assert key["algorithm"] == "RS256"
    claims = jwt.decode(access, key["public_key"], algorithms=["RS256"])
    assert claims["email"] == DEMO_EMAIL
    assert claims["exp"] - claims["iat"] == pytest.approx(300, abs=2)


async def test_register_gives_each_hub_its_own_port_until_the_range_is_full(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cloud = DevCloud(tmp_path, CloudOptions(port_range=(7001, 7002)))
    await cloud.start()
    try:
        access = await _access(http, cloud)
        first = await _register(http, cloud, {"name": "Shop One", "address": "Main St"}, access)
        second = await _register(http, cloud, {"name": "Shop One"}, access)
        third = await _register(http, cloud, {"name": "Shop Three"}, access)
    finally:
        await cloud.stop()
    assert (first[0], second[0]) == (201, 201)
    assert {first[1]["tunnel_port"], second[1]["tunnel_port"]} == {7001, 7002}
    assert first[1]["slug"].startswith("shop-one-")
    assert first[1]["slug"] != second[1]["slug"]
    assert len(first[1]["tunnel_token"]) >= 43  # 32 random bytes in base64url
    assert first[1]["tunnel_token"] != second[1]["tunnel_token"]
    assert third[0] == 409
    assert "tunnel port" in third[1]["detail"]


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic b3duZXI6cGFzcw=="])
async def test_register_refuses_a_missing_or_bad_bearer(
    devcloud: DevCloud, http: aiohttp.ClientSession, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    status, body = await _post(
        http, f"{devcloud.url}/api/hubs/register/", {"name": "Shop"}, headers=headers
    )
    assert status == 401
    assert "detail" in body
    assert devcloud.hubs() == []


async def test_register_refuses_an_expired_access_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cloud = DevCloud(tmp_path, CloudOptions(access_ttl=-10))
    await cloud.start()
    try:
        status, body = await _register(http, cloud, {"name": "Shop"}, await _access(http, cloud))
    finally:
        await cloud.stop()
    assert status == 401
    assert "expired" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"), [({}, "name"), ({"name": ""}, "name"), ({"name": "x", "address": 3}, None)]
)
async def test_register_validates_the_body(
    devcloud: DevCloud, http: aiohttp.ClientSession, body: Any, field: str | None
) -> None:
    status, got = await _register(http, devcloud, body, await _access(http, devcloud))
    assert status == 400
    assert list(got) == [field or "address"]


# --- WebSocket --------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["token", "hub"])
async def test_handshake_with_bad_credentials_is_401(hub: HubEnv, wrong: str) -> None:
    cloud = hub.cloud
    hub_id = "5f0c6b4e-0000-4000-8000-000000000000" if wrong == "hub" else hub.hub_id
    token = "wrong-token" if wrong == "token" else hub.token
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(cloud.ws_url(hub_id, token))
    assert refused.value.response.status_code == 401
    assert cloud.connections(hub.hub_id) == 0


async def test_heartbeat_makes_the_hub_online_until_it_stops(tmp_path: Path) -> None:
    from support.cloud import make_hub_env

    cloud = DevCloud(tmp_path / "cloud", CloudOptions(offline_after=0.3))
    await cloud.start()
    env = make_hub_env(cloud, tmp_path)
    try:
        socket = await _connect(env)
        before = cloud.hub(env.hub_id)
        assert before is not None
        assert (before.connected, before.online, before.last_heartbeat) == (True, False, None)
        await socket.send(json.dumps({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}))
        await wait_until(lambda: cloud.hub(env.hub_id).online)  # type: ignore[union-attr]
        beats = cloud.heartbeats(env.hub_id)
        assert beats[0]["timestamp"] == "2026-01-01T00:00:00Z"
        assert beats[0]["received_at"].tzinfo is not None
        await wait_until(lambda: not cloud.hub(env.hub_id).online)  # type: ignore[union-attr]
        await socket.close()
        await wait_until(lambda: not cloud.hub(env.hub_id).connected)  # type: ignore[union-attr]
    finally:
        await cloud.stop()
    assert cloud.close_codes(env.hub_id) == [1000]


async def test_events_are_recorded_in_order_without_duplicates(hub: HubEnv) -> None:
    cloud = hub.cloud
    first = {"type": "user_sync", "id": "3d0e9f2c-1f1b-4f43-9a53-6a1d2f0b0001", "users": []}
    second = {"type": "plugin_installed", "id": "3d0e9f2c-1f1b-4f43-9a53-6a1d2f0b0002"}
    async with await _connect(hub) as socket:
        for message in (first, second, first):
            await socket.send(json.dumps(message))
        await socket.send(json.dumps({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}))
        await wait_until(lambda: len(cloud.frames(hub.hub_id)) == 4)
    assert cloud.events(hub.hub_id) == [first, second]
    assert cloud.duplicates(hub.hub_id) == 1
    assert len(cloud.heartbeats(hub.hub_id)) == 1


async def test_invalid_frames_are_recorded_and_the_link_stays_up(hub: HubEnv) -> None:
    cloud = hub.cloud
    async with await _connect(hub) as socket:
        for junk in ("not json", "[1, 2]", '{"no": "type"}'):
            await socket.send(junk)
        await socket.send(b"\x00\x01")
        await socket.send(json.dumps({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}))
        await wait_until(lambda: len(cloud.heartbeats(hub.hub_id)) == 1)
        assert await cloud.push(hub.hub_id, {"type": "still_here"})
        assert json.loads(await socket.recv()) == {"type": "still_here"}
    frames = cloud.frames(hub.hub_id)
    assert [frame["valid"] for frame in frames] == [False, False, False, False, True]
    assert frames[3]["data"] == b"\x00\x01"
    assert cloud.events(hub.hub_id) == []


async def test_push_sends_dicts_as_json_and_raw_frames_as_is(hub: HubEnv) -> None:
    cloud = hub.cloud
    assert not await cloud.push(hub.hub_id, {"type": "nobody_listens"})
    async with await _connect(hub) as socket:
        message = {"type": "backup_request", "requested_by": "owner@example.com"}
        assert await cloud.push(hub.hub_id, message)
        assert await cloud.push(hub.hub_id, "{broken")
        assert await cloud.push(hub.hub_id, b"\xff")
        assert json.loads(await socket.recv()) == message
        assert await socket.recv() == "{broken"
        assert await socket.recv() == b"\xff"


async def test_a_second_connection_replaces_the_first(hub: HubEnv) -> None:
    cloud = hub.cloud
    old = await _connect(hub)
    async with await _connect(hub) as new:
        assert await _closed_code(old) == 4000
        assert cloud.connections(hub.hub_id) == 2
        assert await cloud.push(hub.hub_id, {"type": "ping"})
        assert json.loads(await new.recv()) == {"type": "ping"}


async def test_a_dead_old_connection_does_not_hold_up_the_new_one(hub: HubEnv) -> None:
    cloud = hub.cloud
    # A peer that completes the handshake and then never reads nor answers.
    reader, writer = await asyncio.open_connection("127.0.0.1", cloud.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/hub/{hub.hub_id}/?token={hub.token} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readline()
    started = time.monotonic()
    async with await _connect(hub) as socket:
        await socket.send(json.dumps({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}))
        await wait_until(lambda: len(cloud.heartbeats(hub.hub_id)) == 1)
        assert time.monotonic() - started < ws.CLOSE_TIMEOUT
        # The silent peer got the close frame (4000 "replaced"), then was dropped.
        rest = await asyncio.wait_for(reader.read(), ws.CLOSE_TIMEOUT + 5)
        assert (4000).to_bytes(2, "big") + b"replaced" in rest
    writer.close()


async def test_revoke_closes_with_4003_and_refuses_the_hub_afterwards(
    hub: HubEnv, http: aiohttp.ClientSession
) -> None:
    cloud = hub.cloud
    socket = await _connect(hub)
    assert await cloud.revoke(hub.hub_id)
    assert await _closed_code(socket) == 4003
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(cloud.ws_url(hub.hub_id, hub.token))
    assert refused.value.response.status_code == 403
    status, _ = await _upload(http, hub, b"data")
    assert status == 403
    record = cloud.hub(hub.hub_id)
    assert record is not None
    assert record.revoked


@pytest.mark.parametrize(("code", "reason"), [(1001, ""), (1012, "restart")])
async def test_close_hub_and_stop_close_with_the_code_given(
    hub: HubEnv, code: int, reason: str
) -> None:
    cloud = hub.cloud
    socket = await _connect(hub)
    assert await cloud.close_hub(hub.hub_id, code, reason)
    assert await _closed_code(socket) == code
    socket = await _connect(hub)
    await cloud.stop(code)
    assert await _closed_code(socket) == code


async def test_drop_hub_cuts_the_connection_without_a_close_frame(hub: HubEnv) -> None:
    socket = await _connect(hub)
    assert hub.cloud.drop_hub(hub.hub_id)
    assert await _closed_code(socket) is None


# --- backups ----------------------------------------------------------------


async def _upload(
    http: aiohttp.ClientSession,
    env: HubEnv,
    data: bytes,
    *,
    token: str | None = None,
    filename: str = "hub-test-20260101T000000Z.db.zst.age",
    sha256: str | None = None,
) -> tuple[int, Any]:
    headers = {
        "Authorization": f"Bearer {token or env.token}",
        "Content-Type": "application/octet-stream",
        "X-Backup-Filename": filename,
        "X-Backup-Sha256": sha256 or hashlib.sha256(data).hexdigest(),
    }

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    url = f"{env.cloud.url}/api/hubs/{env.hub_id}/backups/"
    async with http.post(url, data=body(), headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_backup_upload_is_stored_and_listed(hub: HubEnv, http: aiohttp.ClientSession) -> None:
    data = bytes(range(256)) * 4096 + b"tail"
    status, body = await _upload(http, hub, data)
    assert status == 201
    [path] = hub.cloud.backups(hub.hub_id)
    assert path.read_bytes() == data
    assert path.name == "hub-test-20260101T000000Z.db.zst.age"
    async with http.get(f"{hub.cloud.url}/admin/hubs/{hub.hub_id}/backups") as r:
        [listed] = await r.json()
    assert listed["backup_id"] == body["backup_id"]
    assert (listed["size"], listed["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"sha256": "0" * 64}, 400),
        ({"sha256": "xyz"}, 400),
        ({"filename": "../../etc/passwd"}, 400),
        ({"filename": ""}, 400),
        ({"token": "someone-elses-token"}, 403),
    ],
)
async def test_backup_upload_refuses_bad_requests_and_keeps_nothing(
    hub: HubEnv, http: aiohttp.ClientSession, change: dict[str, str], status: int
) -> None:
    got, body = await _upload(http, hub, b"x" * 100_000, **change)
    assert got == status
    assert "detail" in body
    folder = hub.cloud.data_dir / "backups" / hub.hub_id
    assert not folder.exists() or list(folder.iterdir()) == []
    assert hub.cloud.backups(hub.hub_id) == []


async def test_backup_upload_without_authorization_is_401(
    hub: HubEnv, http: aiohttp.ClientSession
) -> None:
    url = f"{hub.cloud.url}/api/hubs/{hub.hub_id}/backups/"
    async with http.post(url, data=b"x") as response:
        assert response.status == 401


# --- fault injection, restarts, admin ----------------------------------------


async def test_fail_next_answers_the_injected_status_then_recovers(
    devcloud: DevCloud, http: aiohttp.ClientSession
) -> None:
    url = f"{devcloud.url}/api/auth/login/"
    devcloud.fail_next("/api/auth/", 503, count=2, retry_after=1.5)
    for _ in range(2):
        async with http.post(url, json=OWNER) as response:
            assert (response.status, response.headers["Retry-After"]) == (503, "2")
    assert (await _post(http, url, OWNER))[0] == 200

    devcloud.fail_next(
        "/api/auth/login/", 502, body="<html>Bad gateway</html>", content_type="text/html"
    )
    async with http.post(url, json=OWNER) as response:
        assert response.status == 502
        assert await response.text() == "<html>Bad gateway</html>"

    devcloud.fail_next("/api/auth/login/", None, delay=0.3)
    with pytest.raises(TimeoutError):
        await _post(http, url, OWNER, timeout=aiohttp.ClientTimeout(total=0.1))


async def test_fail_next_applies_to_the_websocket_handshake(hub: HubEnv) -> None:
    hub.cloud.fail_next("/ws/hub/", 429, retry_after=7)
    with pytest.raises(InvalidStatus) as refused:
        await _connect(hub)
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "7"
    async with await _connect(hub):
        assert hub.cloud.connections(hub.hub_id) == 1


async def test_every_handshake_is_recorded_with_its_arrival_and_answer(
    hub: HubEnv,
) -> None:
    cloud = hub.cloud
    cloud.fail_next("/ws/hub/", 503, retry_after=3)
    before = time.monotonic()
    with pytest.raises(InvalidStatus):
        await _connect(hub)
    with pytest.raises(InvalidStatus):
        await websockets.connect(cloud.ws_url(hub.hub_id, "wrong-token"))
    async with await _connect(hub):
        pass
    attempts = cloud.handshakes(hub.hub_id)
    assert [a.status for a in attempts] == [503, 401, 101]
    times = [a.at for a in attempts]
    assert before <= times[0] <= times[1] <= times[2] <= time.monotonic()


async def test_restart_on_the_same_port_and_data_keeps_the_hubs(hub: HubEnv) -> None:
    cloud = hub.cloud
    url = cloud.url
    await cloud.stop()
    await cloud.start()
    assert cloud.url == url
    async with await _connect(hub):
        pass
    await cloud.stop()

    fresh = DevCloud(cloud.data_dir)
    await fresh.start(port=int(url.rsplit(":", 1)[1]))
    try:
        record = fresh.hub(hub.hub_id)
        assert record is not None
        assert record.tunnel_port == hub.creds.tunnel_port
        async with await _connect(HubEnv(hub.settings, hub.creds, fresh)):
            pass
        assert fresh.create_hub()["tunnel_port"] != record.tunnel_port
    finally:
        await fresh.stop()


async def test_admin_api_lists_pushes_and_revokes(hub: HubEnv, http: aiohttp.ClientSession) -> None:
    base = f"{hub.cloud.url}/admin/hubs"
    hub_url = f"{base}/{hub.hub_id}"
    message = {"type": "user_revoked", "user_id": 7, "email": "a@b.c", "reason": "left"}
    assert (await _post(http, f"{hub_url}/messages", message))[0] == 409
    async with await _connect(hub) as socket:
        await socket.send(json.dumps({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}))
        await socket.send(json.dumps({"type": "user_sync", "id": "e1", "users": []}))
        await wait_until(lambda: len(hub.cloud.frames(hub.hub_id)) == 2)
        async with http.get(base) as response:
            [listed] = await response.json()
        assert (listed["connected"], listed["online"]) == (True, True)
        assert hub.token not in json.dumps(listed)
        async with http.get(f"{hub_url}/events") as response:
            assert await response.json() == [{"type": "user_sync", "id": "e1", "users": []}]
        async with http.get(f"{hub_url}/heartbeats") as response:
            [beat] = await response.json()
        assert beat["timestamp"] == "2026-01-01T00:00:00Z"
        assert beat["received_at"].endswith("Z")
        async with http.get(hub_url) as response:
            shown = await response.json()
        assert (shown["connections"], shown["heartbeats"], shown["events"]) == (1, 1, 1)
        assert (await _post(http, f"{hub_url}/messages", message))[0] == 200
        assert json.loads(await socket.recv()) == message
        status, revoked = await _post(http, f"{hub_url}/revoke")
        assert (status, revoked["revoked"]) == (200, True)
        assert await _closed_code(socket) == 4003
    async with http.get(f"{base}/5f0c6b4e-0000-4000-8000-000000000000") as response:
        assert response.status == 404


def test_hub_settings_fixture_writes_loadable_credentials(hub: HubEnv) -> None:
    creds = CredentialStore(hub.settings.state_dir).load()
    assert creds.hub_id == hub.creds.hub_id
    assert creds.cloud_url == hub.settings.cloud_url == hub.cloud.url
    record = hub.cloud.hub(creds.hub_id)
    assert record is not None
    assert record.tunnel_token == creds.tunnel_token.get_secret_value()
    assert not hub.settings.tunnel.enabled
    assert hub.settings.websocket.heartbeat_interval == 0.2


async def test_serves_https_and_wss_with_an_ssl_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    cloud = DevCloud(tmp_path, ssl_context=server)
    await cloud.start()
    try:
        assert cloud.url.startswith("https://127.0.0.1:")
        hub = cloud.create_hub()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{cloud.url}/api/auth/login/", json=OWNER, ssl=client) as response,
        ):
            assert response.status == 200
        url = cloud.ws_url(hub["hub_id"], hub["tunnel_token"])
        assert url.startswith("wss://")
        async with websockets.connect(url, ssl=client):
            assert cloud.connections(hub["hub_id"]) == 1
    finally:
        await cloud.stop()


# --- hublink devcloud ---------------------------------------------------------


async def test_devcloud_command_serves_until_sigterm(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    process = await asyncio.create_subprocess_exec(
        *HUBLINK_COMMAND,
        "devcloud",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 20)
        url = first.decode().split(" at ")[1].strip()
        shown = (await asyncio.wait_for(process.stdout.readline(), 5)).decode()
        assert f"{DEMO_EMAIL} / {DEMO_PASSWORD}" in shown
        assert (await _post(http, f"{url}/api/auth/login/", OWNER))[0] == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 5) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "state" / "devcloud.sqlite3").exists()


@pytest.mark.frp
async def test_frps_runs_beside_the_cloud_when_asked(tmp_path: Path, frp_bin: Path) -> None:
    cloud = DevCloud(tmp_path, frps_path=frp_bin / "frps")
    await cloud.start()
    try:
        assert cloud.frps is not None
        _, writer = await asyncio.open_connection("127.0.0.1", cloud.frps.bind_port)
        writer.close()
        await writer.wait_closed()
    finally:
        await cloud.stop()
    assert cloud.frps is None
