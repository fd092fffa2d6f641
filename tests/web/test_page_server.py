"""PageServer binds web.listen, and says so by name when it cannot."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from hublink.addresses import split_listen
from hublink.config import Settings, WebSettings
from hublink.errors import ConfigError, HublinkError, WebListenError
from hublink.web import PageServer, build_app
from support.page import FakeDaemon


def _app(tmp_path: Path) -> aiohttp.web.Application:
    return build_app(WebSettings(), FakeDaemon().actions(), tmp_path)


async def test_the_page_serves_on_the_listen_address_and_stops(tmp_path: Path) -> None:
    server = PageServer(_app(tmp_path), "127.0.0.1:0")
    await server.start()
    try:
        assert server.port
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/") as response,
        ):
            assert response.status == 200
            assert 'name="code"' in await response.text()
    finally:
        await server.stop()
    assert server.port is None


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_listen_address_is_served(tmp_path: Path) -> None:
    server = PageServer(_app(tmp_path), "[::1]:0")
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://[::1]:{server.port}/") as response,
        ):
            assert response.status == 200
    finally:
        await server.stop()


async def test_a_port_in_use_is_a_named_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = PageServer(_app(tmp_path), f"127.0.0.1:{port}")
        with pytest.raises(WebListenError) as caught:
            await server.start()
    assert isinstance(caught.value, HublinkError)
    assert f"127.0.0.1:{port}" in str(caught.value) and caught.value.hint


async def test_an_address_not_on_this_box_is_a_named_error(tmp_path: Path) -> None:
    server = PageServer(_app(tmp_path), "192.0.2.1:8002")  # TEST-NET-1: never local
    with pytest.raises(WebListenError):
        await server.start()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8002", ("127.0.0.1", 8002)),
        ("[::1]:8002", ("::1", 8002)),
        ("box:80", ("box", 80)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),  # any free port: the page allows it
    ],
)
def test_listen_addresses_parse(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen, any_port=True) == expected


@pytest.mark.parametrize(
    ("listen", "named"),
    [
        ("", "not HOST:PORT"),
        ("8002", "not HOST:PORT"),
        ("::1:8002", "not HOST:PORT"),
        ("[::1]", "not HOST:PORT"),
        ("host:", "not HOST:PORT"),
        ("[x]:1", "not HOST:PORT"),
        ("[1.2.3.4]:1", "not HOST:PORT"),
        ("host:99999", "between 0 and 65535"),
    ],
)
def test_malformed_listen_addresses_are_named_by_the_settings(listen: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        split_listen(listen, any_port=True)
    with pytest.raises(Exception) as caught:
        Settings(web=WebSettings(listen=listen))
    assert named in str(caught.value)


def test_a_malformed_listen_from_the_environment_is_exit_78(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hublink.configload import load_settings

    monkeypatch.setenv("HUBLINK_WEB__LISTEN", "localhost")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "web.listen = 'localhost'" in str(caught.value) and caught.value.exit_code == 78
