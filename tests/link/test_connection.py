"""The WebSocket link (contract section 2) seen from the reference Cloud; a real daemon."""

from __future__ import annotations

import itertools
import re
import ssl
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from hublink.config import WebSocketSettings
from hublink.credentials import CredentialStore
from hublink.devcloud import DevCloud
from support.daemon import TcpProxy, spawn
from support.devcloud import HubEnv
from support.polling import wait_until

__all__ = ["spawn"]  # the fixture, imported for pytest

HEARTBEAT_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def beats(hub: HubEnv) -> list[dict[str, Any]]:
    return hub.cloud.heartbeats(hub.hub_id)


async def test_heartbeats_come_at_once_then_every_interval_in_contract_format(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    daemon = await spawn()
    await wait_until(lambda: len(beats(hub_settings)) >= 6, what="six heartbeats")
    received = beats(hub_settings)
    for beat in received:
        assert beat["type"] == "heartbeat"
        assert HEARTBEAT_TIMESTAMP.match(beat["timestamp"]), beat["timestamp"]
    gaps = [
        (later["received_at"] - earlier["received_at"]).total_seconds()
        for earlier, later in itertools.pairwise(received)
    ]
    mean = sum(gaps) / len(gaps)
    # heartbeat_interval is 0.2 s in these settings; a loaded CI box adds jitter, not drift.
    assert 0.15 <= mean <= 0.3, gaps
    status = await daemon.wait_status(lambda s: s["websocket"]["last_heartbeat_at"] is not None)
    assert status["websocket"]["state"] == "connected"


async def test_first_heartbeat_does_not_wait_for_the_interval(
    devcloud: DevCloud, tmp_path: Any, spawn: Callable[..., Any]
) -> None:
    from support.devcloud import make_hub_env

    hub = make_hub_env(
        devcloud, tmp_path / "slow", websocket=WebSocketSettings(heartbeat_interval=30)
    )
    await spawn(hub)
    await wait_until(lambda: beats(hub), timeout=10, what="a first heartbeat")
    assert devcloud.connections(hub.hub_id) == 1


async def test_reconnects_after_the_cloud_closes_the_link(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    assert await cloud.close_hub(hub_settings.hub_id, code=1000, reason="bye")
    await wait_until(lambda: cloud.connections(hub_settings.hub_id) >= 2, what="reconnection")
    count = len(beats(hub_settings))
    await wait_until(lambda: len(beats(hub_settings)) >= count + 2, what="heartbeats again")
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert status["websocket"]["reconnects"] >= 1


async def test_reconnects_after_a_drop_without_close_frame(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    assert cloud.drop_hub(hub_settings.hub_id)
    await wait_until(lambda: cloud.connections(hub_settings.hub_id) >= 2, what="reconnection")


async def test_reconnects_after_the_cloud_restarts_and_reports_backoff_meanwhile(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    port = cloud.port
    await cloud.stop()
    down = await daemon.wait_status(lambda s: s["websocket"]["state"] == "backoff")
    assert down["websocket"]["last_error"]
    assert down["websocket"]["next_attempt_at"] is not None
    assert down["daemon"]["running"] is True
    await cloud.start(port=port)
    await wait_until(lambda: beats(hub_settings), what="heartbeats after the restart")
    up = await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert up["websocket"]["reconnects"] >= 1
    assert up["websocket"]["next_attempt_at"] is None


async def test_a_link_that_stops_answering_pings_is_replaced(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Any
) -> None:
    cloud = hub_settings.cloud
    proxy = await TcpProxy(cloud.port).start()
    try:
        settings = hub_settings.settings.model_copy(update={"cloud_url": proxy.url})
        await spawn(settings=settings)
        await wait_until(lambda: beats(hub_settings), what="first heartbeat")
        proxy.blackhole()  # no FIN, no RST: only the missing pongs tell
        lost_at = time.monotonic()
        await wait_until(
            lambda: cloud.connections(hub_settings.hub_id) >= 2, what="a new connection"
        )
        # ping_interval + ping_timeout are 0.5 s each here; far below the 60 s a TCP stack needs.
        assert time.monotonic() - lost_at < 8
        count = len(beats(hub_settings))
        await wait_until(lambda: len(beats(hub_settings)) >= count + 2, what="heartbeats again")
    finally:
        await proxy.close()


def _break_token(hub: HubEnv) -> None:
    store = CredentialStore(hub.settings.state_dir)
    with store.locked():
        store.save(
            hub.creds.model_copy(update={"tunnel_token": type(hub.creds.tunnel_token)("x" * 40)})
        )


async def test_a_401_handshake_means_unauthorized_and_slow_retries(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    _break_token(hub_settings)
    proxy = await TcpProxy(hub_settings.cloud.port).start()
    try:
        settings = hub_settings.settings.model_copy(update={"cloud_url": proxy.url})
        daemon = await spawn(settings=settings)
        status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "unauthorized")
        assert "401" in status["websocket"]["last_error"]
        before = proxy.accepted
        started = time.monotonic()
        # unauthorized_retry is 1 s: over 2.5 s at most 3 more attempts, where the
        # ordinary backoff (0.05..0.5 s) would have made a dozen.
        await wait_until(lambda: time.monotonic() - started >= 2.5, what="the window")
        assert 1 <= proxy.accepted - before <= 3
        errors = [e for e in daemon.log_events() if e.get("level") == "error"]
        assert any("hublink register --force" in e["event"] for e in errors)
    finally:
        await proxy.close()


async def test_close_4001_means_unauthorized_and_no_quick_reconnect(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    await cloud.close_hub(hub_settings.hub_id, code=4001, reason="token rotated")
    closed_at = time.monotonic()
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "unauthorized")
    assert "4001" in status["websocket"]["last_error"]
    await wait_until(lambda: cloud.connections(hub_settings.hub_id) >= 2, what="the slow retry")
    # unauthorized_retry = 1 s, reconnect_max = 0.5 s: only the slow path waits this long.
    assert time.monotonic() - closed_at >= 0.9


async def test_a_revoked_hub_stays_unauthorized(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    assert await cloud.revoke(hub_settings.hub_id)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "unauthorized")
    # The next attempts get HTTP 403 and the state stays put.
    await daemon.wait_status(
        lambda s: (
            "403" in (s["websocket"]["last_error"] or "")
            and s["websocket"]["state"] == "unauthorized"
        )
    )
    assert cloud.connections(hub_settings.hub_id) == 1


@pytest.mark.parametrize("status_code", [429, 503])
async def test_retry_after_on_the_handshake_is_a_minimum_wait(
    hub_settings: HubEnv, spawn: Callable[..., Any], status_code: int
) -> None:
    cloud = hub_settings.cloud
    cloud.fail_next("/ws/hub/", status_code, retry_after=1.5)
    started = time.monotonic()
    daemon = await spawn()
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "backoff")
    assert str(status_code) in status["websocket"]["last_error"]
    await wait_until(lambda: beats(hub_settings), what="the retry")
    assert time.monotonic() - started >= 1.5


@pytest.mark.parametrize("code", [1001, 1012, 1013])
async def test_going_away_closes_reconnect_after_a_spread_delay(
    devcloud: DevCloud, tmp_path: Any, spawn: Callable[..., Any], code: int
) -> None:
    from support.devcloud import make_hub_env

    # A wide spread and a huge minimum backoff: only the spread can explain a quick return.
    hub = make_hub_env(
        devcloud,
        tmp_path / "spread",
        websocket=WebSocketSettings(
            heartbeat_interval=0.2, reconnect_min=30, reconnect_max=60, reconnect_spread=2
        ),
    )
    daemon = await spawn(hub)
    await wait_until(lambda: beats(hub), what="first heartbeat")
    await devcloud.close_hub(hub.hub_id, code=code)
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "backoff")
    assert str(code) in status["websocket"]["last_error"]
    await wait_until(
        lambda: devcloud.connections(hub.hub_id) >= 2, timeout=10, what="a spread reconnect"
    )


async def test_ordinary_loss_waits_the_backoff_not_the_spread(
    devcloud: DevCloud, tmp_path: Any, spawn: Callable[..., Any]
) -> None:
    from datetime import datetime

    from support.devcloud import make_hub_env

    hub = make_hub_env(
        devcloud,
        tmp_path / "backoff",
        websocket=WebSocketSettings(
            heartbeat_interval=0.2, reconnect_min=20, reconnect_max=60, reconnect_spread=0.1
        ),
    )
    daemon = await spawn(hub)
    await wait_until(lambda: beats(hub), what="first heartbeat")
    await devcloud.close_hub(hub.hub_id, code=1011)
    status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "backoff")
    next_at = datetime.fromisoformat(status["websocket"]["next_attempt_at"].replace("Z", "+00:00"))
    assert next_at - datetime.now(next_at.tzinfo) > timedelta(seconds=15)


BAD_FRAMES: list[Any] = [
    "this is not json",
    "[1, 2, 3]",
    '"a string"',
    '{"no_type": true}',
    '{"type": 42}',
    '{"type": "reboot_now", "please": true}',
    '{"type": "plugin_update_available", "plugin_id": "p1"}',
    '{"type": "user_revoked"}',
    b"\x00\x01binary",
]


async def test_bad_frames_are_dropped_and_the_link_stays_up(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    for frame in BAD_FRAMES:
        assert await cloud.push(hub_settings.hub_id, frame)
    good = {
        "type": "plugin_update_available",
        "plugin_id": "inventory",
        "current_version": "1.0.0",
        "new_version": "1.1.0",
        "download_url": "https://cloud.example/p/inventory.zip",
    }
    assert await cloud.push(hub_settings.hub_id, good)
    status = await daemon.wait_status(lambda s: len(s["plugin_updates"]) >= 1)
    assert status["plugin_updates"][0]["plugin_id"] == "inventory"
    assert cloud.connections(hub_settings.hub_id) == 1
    count = len(beats(hub_settings))
    await wait_until(lambda: len(beats(hub_settings)) >= count + 2, what="heartbeats after")
    warnings = [e for e in daemon.log_events() if e.get("level") == "warning"]
    assert any("unknown type" in e["event"] for e in warnings)
    assert sum("malformed" in e["event"] for e in warnings) >= len(BAD_FRAMES) - 1


async def test_a_frame_over_max_message_size_is_refused_and_the_daemon_carries_on(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    huge = (
        '{"type": "plugin_update_available", "plugin_id": "big", "new_version": "2", '
        '"download_url": "https://x.example/", "pad": "' + "x" * (2 * 1024 * 1024) + '"}'
    )
    assert await cloud.push(hub_settings.hub_id, huge)
    # websockets refuses it with 1009; the daemon reconnects and keeps beating.
    await wait_until(lambda: cloud.connections(hub_settings.hub_id) >= 2, what="reconnection")
    count = len(beats(hub_settings))
    await wait_until(lambda: len(beats(hub_settings)) >= count + 2, what="heartbeats after")
    status = await daemon.wait_status(lambda s: s["websocket"]["reconnects"] >= 1)
    assert status["plugin_updates"] == []
    closes = [e for e in daemon.log_events() if e["event"] == "link lost; reconnecting"]
    assert any("hublink closed the link: 1009" in e["reason"] for e in closes)
    daemon.assert_running()


async def test_the_token_never_reaches_the_log_even_at_debug_level(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    cloud = hub_settings.cloud
    daemon = await spawn()
    await wait_until(lambda: beats(hub_settings), what="first heartbeat")
    await cloud.close_hub(hub_settings.hub_id, code=4001)
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "unauthorized")
    assert await daemon.terminate() == 0
    text = daemon.log_text()
    assert "/ws/hub/" in text  # the handshake was logged at debug level, token masked
    assert hub_settings.token not in text


async def test_wss_with_the_extra_ca_bundle_of_tls_ca_file(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Any
) -> None:
    import trustme

    from hublink.config import TlsSettings

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    ca_file = tmp_path / "extra-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proxy = await TcpProxy(hub_settings.cloud.port, tls=server_tls).start()
    try:
        trusted = hub_settings.settings.model_copy(
            update={"cloud_url": proxy.url, "tls": TlsSettings(ca_file=ca_file)}
        )
        daemon = await spawn(settings=trusted)
        await wait_until(lambda: beats(hub_settings), what="heartbeats over wss")
        assert await daemon.terminate() == 0
    finally:
        await proxy.close()


async def test_wss_to_an_unknown_ca_is_refused_loudly_and_retried(
    hub_settings: HubEnv, spawn: Callable[..., Any]
) -> None:
    import trustme

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    proxy = await TcpProxy(hub_settings.cloud.port, tls=server_tls).start()
    try:
        untrusted = hub_settings.settings.model_copy(update={"cloud_url": proxy.url})
        daemon = await spawn(settings=untrusted)
        status = await daemon.wait_status(lambda s: s["websocket"]["state"] == "backoff")
        assert "certificate" in status["websocket"]["last_error"].lower()

        def refusals() -> int:
            return sum(
                e.get("level") == "error" and "certificate" in str(e.get("reason", "")).lower()
                for e in daemon.log_events()
            )

        # Logged as an error (a wrong CA does not heal itself), and still retried.
        await wait_until(lambda: refusals() >= 2, what="a second refused attempt")
        assert not beats(hub_settings)
    finally:
        await proxy.close()


def test_backoff_is_full_jitter_between_min_and_a_doubling_ceiling() -> None:
    from hublink.retry import Backoff

    highs = Backoff(1.0, 60.0, rand=lambda: 1.0)
    assert [highs.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    lows = Backoff(1.0, 60.0, rand=lambda: 0.0)
    assert {lows.next() for _ in range(8)} == {1.0}
    highs.reset()
    assert highs.next() == 1.0


@pytest.mark.parametrize("no_proxy", [None, "localhost"])
async def test_the_link_honours_https_proxy_and_no_proxy(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Any, no_proxy: str | None
) -> None:
    import trustme

    from hublink.config import TlsSettings

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    ca_file = tmp_path / "extra-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cloud_tls = await TcpProxy(hub_settings.cloud.port, tls=server_tls).start()
    tls_port = cloud_tls.url.rsplit(":", 1)[1]
    http_proxy = await TcpProxy(int(tls_port), http_connect=True).start()
    try:
        settings = hub_settings.settings.model_copy(
            update={"cloud_url": cloud_tls.url, "tls": TlsSettings(ca_file=ca_file)}
        )
        env = {"HTTPS_PROXY": http_proxy.url}
        if no_proxy:
            env["NO_PROXY"] = no_proxy
        await spawn(settings=settings, env=env)
        await wait_until(lambda: beats(hub_settings), what="heartbeats")
        if no_proxy:
            assert http_proxy.connect_requests == []
        else:
            assert http_proxy.connect_requests[0].startswith(f"CONNECT localhost:{tls_port} ")
    finally:
        await http_proxy.close()
        await cloud_tls.close()


@pytest.mark.parametrize("token", ["plain-Token_0.9~", "a+b/c==&d#e f%"])
def test_ws_url_matches_the_contract_and_keeps_any_token_intact(token: str) -> None:
    from urllib.parse import parse_qs, urlsplit
    from uuid import uuid4

    from pydantic import SecretStr

    from hublink.config import Settings
    from hublink.credentials import Credentials
    from hublink.link.handshake import ws_url

    hub_id = uuid4()
    creds = Credentials(
        hub_id=hub_id,
        slug="corner",
        tunnel_port=7001,
        tunnel_token=SecretStr(token),
        cloud_url="https://cloud.example:8443",
        registered_at="2026-01-01T00:00:00Z",
    )
    url = urlsplit(ws_url(Settings(cloud_url="https://cloud.example:8443/"), creds))
    assert (url.scheme, url.netloc, url.path) == ("wss", "cloud.example:8443", f"/ws/hub/{hub_id}/")
    # What the Cloud's query parser (Django's, aiohttp's) reads back is the token itself.
    assert parse_qs(url.query) == {"token": [token]}
