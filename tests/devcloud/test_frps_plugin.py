"""The reference Cloud's frps server plugin, spoken to the way frps speaks to it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hublink.devcloud import DevCloud


async def _ask(cloud: DevCloud, op: str, content: dict[str, Any]) -> dict[str, Any]:
    """POST one plugin request as frps does (``?version=…&op=…`` and a JSON body)."""
    url = f"{cloud.url}/frps/plugin/?version=0.1.0&op={op}"
    body = {"version": "0.1.0", "op": op, "content": content}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def _login(hub_id: str, token: str) -> dict[str, Any]:
    return {
        "version": "0.65.0",
        "os": "linux",
        "arch": "amd64",
        "user": hub_id,
        "privilege_key": "d41d8cd98f00b204e9800998ecf8427e",
        "timestamp": 1795833496,
        "metas": {"token": token},
        "pool_count": 1,
        "client_address": "127.0.0.1:40000",
    }


def _new_proxy(hub_id: str, token: str, **proxy: Any) -> dict[str, Any]:
    return {
        "user": {"user": hub_id, "metas": {"token": token}, "run_id": "02f3c10c0aeb830b"},
        "proxy_name": f"{hub_id}.hub",
        **proxy,
    }


async def test_login_with_the_hubs_token_is_accepted(frp_cloud: DevCloud) -> None:
    hub = frp_cloud.create_hub()
    answer = await _ask(frp_cloud, "Login", _login(hub["hub_id"], hub["tunnel_token"]))
    assert answer == {"reject": False, "unchange": True}


@pytest.mark.parametrize(
    ("who", "token", "reason"),
    [
        ("self", "wrong", "wrong tunnel token for hub {hub_id}"),
        ("self", "", "wrong tunnel token for hub {hub_id}"),
        ("other", "own", "wrong tunnel token for hub {other_id}"),
        ("unknown", "own", "unknown hub 00000000-0000-4000-8000-000000000000"),
        ("", "own", "no hub id: set `user` to the hub id in frpc's config"),
        ("not-a-uuid", "own", "unknown hub not-a-uuid"),
    ],
)
async def test_login_is_refused_with_a_clear_reason(
    frp_cloud: DevCloud, who: str, token: str, reason: str
) -> None:
    hub = frp_cloud.create_hub()
    other = frp_cloud.create_hub(name="Other")
    user = {
        "self": hub["hub_id"],
        "other": other["hub_id"],
        "unknown": "00000000-0000-4000-8000-000000000000",
    }.get(who, who)
    secret = hub["tunnel_token"] if token == "own" else token
    answer = await _ask(frp_cloud, "Login", _login(user, secret))
    assert answer["reject"] is True
    assert answer["reject_reason"] == reason.format(hub_id=hub["hub_id"], other_id=other["hub_id"])
    assert hub["tunnel_token"] not in answer["reject_reason"]


async def test_a_revoked_hub_cannot_log_in(frp_cloud: DevCloud) -> None:
    hub = frp_cloud.create_hub()
    await frp_cloud.revoke(hub["hub_id"])
    answer = await _ask(frp_cloud, "Login", _login(hub["hub_id"], hub["tunnel_token"]))
    assert answer == {"reject": True, "reject_reason": f"hub {hub['hub_id']} has been revoked"}


async def test_new_proxy_on_the_hubs_own_port_or_slug_is_accepted(frp_cloud: DevCloud) -> None:
    hub = frp_cloud.create_hub()
    tcp = _new_proxy(
        hub["hub_id"], hub["tunnel_token"], proxy_type="tcp", remote_port=hub["tunnel_port"]
    )
    http = _new_proxy(hub["hub_id"], hub["tunnel_token"], proxy_type="http", subdomain=hub["slug"])
    assert await _ask(frp_cloud, "NewProxy", tcp) == {"reject": False, "unchange": True}
    assert await _ask(frp_cloud, "NewProxy", http) == {"reject": False, "unchange": True}


async def test_new_proxy_elsewhere_is_refused(frp_cloud: DevCloud) -> None:
    hub = frp_cloud.create_hub()
    other = frp_cloud.create_hub(name="Other")
    hub_id, token = hub["hub_id"], hub["tunnel_token"]
    cases = {
        "tcp other port": (
            _new_proxy(hub_id, token, proxy_type="tcp", remote_port=other["tunnel_port"]),
            f"remote port {other['tunnel_port']} is not hub {hub_id}'s; "
            f"its tunnel port is {hub['tunnel_port']}",
        ),
        "tcp any port": (
            _new_proxy(hub_id, token, proxy_type="tcp", remote_port=0),
            f"remote port 0 is not hub {hub_id}'s; its tunnel port is {hub['tunnel_port']}",
        ),
        "http other slug": (
            _new_proxy(hub_id, token, proxy_type="http", subdomain=other["slug"]),
            f"subdomain {other['slug']!r} is not hub {hub_id}'s; use {hub['slug']!r}",
        ),
        "udp": (
            _new_proxy(hub_id, token, proxy_type="udp", remote_port=hub["tunnel_port"]),
            "proxy type 'udp' is not allowed; use tcp or http",
        ),
        "stolen identity": (
            _new_proxy(other["hub_id"], token, proxy_type="tcp", remote_port=other["tunnel_port"]),
            f"wrong tunnel token for hub {other['hub_id']}",
        ),
    }
    for name, (content, reason) in cases.items():
        answer = await _ask(frp_cloud, "NewProxy", content)
        assert answer == {"reject": True, "reject_reason": reason}, name


async def test_malformed_requests_are_refused_and_other_ops_pass(frp_cloud: DevCloud) -> None:
    url = f"{frp_cloud.url}/frps/plugin/"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=b"not json") as response,
    ):
        garbled = await response.json()
    assert garbled == {"reject": True, "reject_reason": "malformed plugin request"}
    answer = await _ask(frp_cloud, "NewProxy", {"user": "not an object"})
    assert answer == {"reject": True, "reject_reason": "malformed NewProxy content"}
    assert await _ask(frp_cloud, "Ping", {}) == {"reject": False, "unchange": True}


async def test_frps_is_configured_for_loopback_the_plugin_and_the_port_range(
    frp_cloud: DevCloud,
) -> None:
    assert frp_cloud.frps is not None
    config = tomllib.loads((Path(frp_cloud.data_dir) / "frps.toml").read_text())
    low, high = frp_cloud.port_range
    assert config["bindAddr"] == "127.0.0.1"
    assert config["bindPort"] == frp_cloud.frps.bind_port
    assert config["vhostHTTPPort"] == frp_cloud.frps.vhost_http_port
    assert config["allowPorts"] == [{"start": low, "end": high}]
    (plugin,) = config["httpPlugins"]
    assert plugin["addr"] == f"127.0.0.1:{frp_cloud.port}"
    assert plugin["path"] == "/frps/plugin/"
    assert plugin["ops"] == ["Login", "NewProxy"]
