"""Contract section 1, the Cloud REST API: ``hublink register`` run as a user runs it,
against the reference Cloud (and a silent server, a TLS front, a proxy's HTML).

What it proves: the owner's JWTs and password never reach a file or the
output; wrong credentials are refused (77) without a retry; transient failures
(503, a slow answer) are retried and a 401 on register refreshes the token
once; an unreachable or silent Cloud ends in 69 within 30 s; an HTML error page
is shown by its useful part; an invalid answer (missing field, non-UUID
``hub_id``, port out of range) saves nothing; an untrusted certificate fails
clearly and ``tls.ca_file`` fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from hublink.devcloud import DEMO_PASSWORD, DevCloud
from hublink.devcloud.ports import free_port
from support.cli import HubBox, make_hub_box


async def test_no_jwt_or_password_on_disk_or_in_output(devcloud: DevCloud, box: HubBox) -> None:
    run = await box.register()
    assert run.code == 0, run.stderr
    token = tomllib.loads(box.credentials.read_text())["tunnel_token"]
    events = run.log_events()
    assert any(e.get("event") == "cloud request" for e in events)  # debug logging was on
    for text in (run.stdout, run.stderr):
        assert DEMO_PASSWORD not in text
        assert "eyJ" not in text
        assert token not in text
    for folder in (box.state_dir, box.config_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                assert DEMO_PASSWORD.encode() not in content, path
                assert b"eyJ" not in content, path


async def test_wrong_password_exits_77_and_writes_nothing(devcloud: DevCloud, box: HubBox) -> None:
    run = await box.register(password="guess")
    assert run.code == 77
    assert "No active account found" in run.stderr
    assert box.written() == set()
    assert devcloud.hubs() == []


# --- an unreliable Cloud: retried when transient, never when refused -----------------


async def test_cloud_down_exits_69_within_30_seconds(tmp_path: Path) -> None:
    box = make_hub_box(tmp_path, f"http://127.0.0.1:{free_port()}")
    run = await box.register()
    assert run.code == 69
    assert run.elapsed < 30
    assert "unreachable" in run.stderr
    assert box.written() == set()


async def test_slow_but_answering_cloud_is_waited_for(devcloud: DevCloud, box: HubBox) -> None:
    devcloud.fail_next("/api/hubs/register/", None, delay=2.0)
    run = await box.register()
    assert run.code == 0, run.stderr
    assert len(devcloud.hubs()) == 1


@pytest.mark.slow
async def test_cloud_that_never_answers_times_out_with_69_within_30_seconds(
    tmp_path: Path,
) -> None:
    """A server that accepts connections and then says nothing: the default timeouts apply."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        box = make_hub_box(tmp_path, f"http://127.0.0.1:{port}")
        run = await box.register()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert run.code == 69
    assert "timed out" in run.stderr
    assert run.elapsed < 30
    assert box.written() == set()


async def test_503_twice_then_success(devcloud: DevCloud, box: HubBox) -> None:
    devcloud.fail_next("/api/auth/login/", 503, count=2)
    run = await box.register()
    assert run.code == 0, run.stderr
    retries = [e for e in run.log_events() if e.get("event") == "cloud request failed, retrying"]
    assert len(retries) == 2
    assert len(devcloud.hubs()) == 1


async def test_register_401_refreshes_and_succeeds(devcloud: DevCloud, box: HubBox) -> None:
    devcloud.fail_next("/api/hubs/register/", 401, body='{"detail": "Token is expired"}')
    run = await box.register()
    assert run.code == 0, run.stderr
    assert len(devcloud.hubs()) == 1


async def test_html_error_page_from_a_proxy(devcloud: DevCloud, box: HubBox) -> None:
    page = (
        "<html><head><title>403 Forbidden</title></head>"
        "<body><h1>Blocked by the shop's firewall</h1></body></html>"
    )
    devcloud.fail_next("/api/hubs/register/", 403, body=page, content_type="text/html")
    run = await box.register()
    assert run.code == 1
    assert "403 Forbidden: Blocked by the shop's firewall" in run.stderr
    assert "<title>" not in run.stderr
    assert box.written() == set()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"hub_id": "6d0c6d1e-58a8-4bb0-9f2d-9f3b3c2c8a10", "slug": "x", "tunnel_port": 7001},
            "tunnel_token: missing",
        ),
        (
            {"hub_id": "hub-1", "slug": "x", "tunnel_port": 7001, "tunnel_token": "t" * 40},
            "hub_id = 'hub-1'",
        ),
        (
            {
                "hub_id": "6d0c6d1e-58a8-4bb0-9f2d-9f3b3c2c8a10",
                "slug": "x",
                "tunnel_port": 65536,
                "tunnel_token": "t" * 40,
            },
            "tunnel_port = 65536",
        ),
    ],
    ids=["missing-field", "non-uuid-hub-id", "port-out-of-range"],
)
async def test_invalid_register_answer_saves_nothing(
    devcloud: DevCloud, box: HubBox, answer: dict[str, object], expected: str
) -> None:
    devcloud.fail_next("/api/hubs/register/", 201, body=json.dumps(answer))
    run = await box.register()
    assert run.code == 1
    assert expected in run.stderr
    assert "nothing was saved" in run.stderr
    assert "t" * 40 not in run.stderr
    assert box.written() == set()


# --- TLS in front of the Cloud ------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_front(target_port: int, ca: trustme.CA) -> AsyncIterator[int]:
    """Terminate TLS on a free port and pass the bytes to the Cloud, like a reverse proxy."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # the other side went away; closing below is all there is to do
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_untrusted_certificate_fails_clearly_then_tls_ca_file_fixes_it(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    ca = trustme.CA()
    async with tls_front(devcloud.port, ca) as port:
        box = make_hub_box(tmp_path, f"https://127.0.0.1:{port}")
        run = await box.register()
        assert run.code == 69
        assert f"127.0.0.1:{port}" in run.stderr
        assert "certificate" in run.stderr and "tls.ca_file" in run.stderr
        assert run.elapsed < 10  # a bad certificate is not retried
        assert box.written() == set()

        ca_file = tmp_path / "shop-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        box.env["HUBLINK_TLS__CA_FILE"] = str(ca_file)
        run = await box.register()
        assert run.code == 0, run.stderr
    assert len(devcloud.hubs()) == 1
