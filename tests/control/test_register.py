"""``POST /v1/register`` (contract section 8) against a real daemon and the reference Cloud.

201 and the link up without a restart; 401, 409, 422, 502 each with
``{"error", "hint"}``; two registrations at once (one wins, the other 409,
nothing half-saved); any JSON body answered without a 500; the password never
in an answer, a log line or a file.
"""

from __future__ import annotations

import asyncio
import json
import stat
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hublink.control import request
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from hublink.devcloud.ports import free_port
from support.cloud import HubEnv
from support.daemon import Daemons, HublinkProcess
from support.hubs import connected, running, unregistered_hub

OWNER = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
WRONG = "not-the-password-" + "x" * 8


def assert_refusal(answer: tuple[int, Any], status: int) -> dict[str, Any]:
    code, body = answer
    assert code == status, answer
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["hint"], str) and body["hint"]
    return dict(body)


def assert_password_nowhere(daemon: HublinkProcess, *passwords: str) -> None:
    log = daemon.log_text()
    files = [p for p in daemon.settings.state_dir.iterdir() if p.is_file()]
    for password in passwords:
        assert password not in log
        for path in files:
            assert password.encode() not in path.read_bytes(), path


async def waiting_daemon(cloud: DevCloud, base: Path, daemons: Daemons) -> HublinkProcess:
    daemon = await daemons.start(unregistered_hub(cloud, base))
    await daemon.wait_status(running)
    return daemon


async def test_a_registration_is_saved_and_the_link_comes_up_without_a_restart(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await waiting_daemon(devcloud, tmp_path, daemons)
    body = {**OWNER, "name": "Front Desk", "address": "Calle Mayor 1", "force": False}

    code, answer = await daemon.call("POST", "/v1/register", body)

    assert code == 201, answer
    assert set(answer) == {"hub_id", "slug"}
    record = devcloud.hub(answer["hub_id"])
    assert record is not None
    assert (record.name, record.address, record.slug) == (
        "Front Desk",
        "Calle Mayor 1",
        answer["slug"],
    )
    credentials = daemon.settings.credentials_path
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    saved = tomllib.loads(credentials.read_text())
    assert (saved["hub_id"], saved["name"]) == (answer["hub_id"], "Front Desk")
    status = await daemon.wait_status(connected)
    assert (status["hub_id"], status["name"]) == (answer["hub_id"], "Front Desk")
    assert status["daemon"]["pid"] == daemon.pid
    assert_password_nowhere(daemon, DEMO_PASSWORD)


async def test_left_out_name_and_address_take_the_configured_defaults(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = unregistered_hub(devcloud, tmp_path)
    daemon = await daemons.start(
        hub, env={"HUBLINK_HUB__NAME": "Kiosk", "HUBLINK_HUB__ADDRESS": "Plaza 2"}
    )
    await daemon.wait_status(running)
    code, answer = await daemon.call("POST", "/v1/register", OWNER)
    assert code == 201, answer
    record = devcloud.hub(answer["hub_id"])
    assert record is not None and (record.name, record.address) == ("Kiosk", "Plaza 2")


async def test_a_wrong_password_is_401_and_nothing_is_saved(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await waiting_daemon(devcloud, tmp_path, daemons)
    hubs_before = len(devcloud.hubs())

    answer = await daemon.call("POST", "/v1/register", {**OWNER, "password": WRONG})

    body = assert_refusal(answer, 401)
    assert WRONG not in json.dumps(body)
    assert not daemon.settings.credentials_path.exists()
    assert len(devcloud.hubs()) == hubs_before
    assert (await daemon.wait_status(running))["registered"] is False
    assert_password_nowhere(daemon, WRONG)


async def test_a_registered_hub_is_409_without_force_and_the_cloud_is_not_asked(
    hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(connected)
    hubs_before = len(hub.cloud.hubs())

    body = assert_refusal(await daemon.call("POST", "/v1/register", OWNER), 409)

    assert hub.creds.slug in body["error"]
    assert "force" in body["hint"]
    assert len(hub.cloud.hubs()) == hubs_before
    status = daemon.status()
    assert status is not None and status["hub_id"] == hub.hub_id


async def test_force_replaces_the_registration_and_the_link_follows(
    hub: HubEnv, daemons: Daemons
) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await daemon.wait_status(connected)

    code, answer = await daemon.call("POST", "/v1/register", {**OWNER, "force": True})

    assert code == 201, answer
    status = await daemon.wait_status(lambda s: connected(s) and s["hub_id"] == answer["hub_id"])
    assert status["daemon"]["pid"] == daemon.pid
    record = cloud.hub(hub.hub_id)
    assert record is not None and not record.connected


async def test_bad_fields_are_422_naming_each_and_never_the_password(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await waiting_daemon(devcloud, tmp_path, daemons)
    secret = "s3cret\x00pass"
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["email", "password"]),
        ({"email": 7, "password": ["x"]}, ["email", "password"]),
        ({**OWNER, "name": 5, "address": {}, "force": "yes"}, ["name", "address", "force"]),
        ({**OWNER, "name": "x" * 101}, ["name"]),
        ({**OWNER, "name": "bad\x07bell"}, ["name"]),
        ({**OWNER, "address": "lone \ud800 half"}, ["address"]),
        ({"email": DEMO_EMAIL, "password": secret}, ["password"]),
        ({"email": "  ", "password": "x"}, ["email"]),
    ]
    for body, fields in cases:
        answer = assert_refusal(await daemon.call("POST", "/v1/register", body), 422)
        named = sorted(problem.split(":")[0] for problem in answer["problems"])
        assert named == sorted(fields), (body, answer)
        assert secret not in json.dumps(answer)
    assert not daemon.settings.credentials_path.exists()
    assert_password_nowhere(daemon, secret)


async def test_a_body_that_is_not_json_is_400(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await waiting_daemon(devcloud, tmp_path, daemons)
    for raw in (b"email=a&password=b", b"\xff\xfe", b"{", b"1" * 5000):
        answer = await asyncio.to_thread(_raw_post, daemon, raw)
        assert answer[0] == 400, (raw[:20], answer)
    answer = await daemon.call("POST", "/v1/register", ["not", "an", "object"])
    assert_refusal(answer, 422)


def _raw_post(daemon: HublinkProcess, raw: bytes) -> tuple[int, Any]:
    import http.client
    import socket

    conn = http.client.HTTPConnection("hublink", timeout=10)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.settings.control_socket))
    conn.sock = sock
    try:
        conn.request("POST", "/v1/register", body=raw)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def test_a_cloud_that_cannot_be_reached_is_502(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = unregistered_hub(devcloud, tmp_path)
    away = hub.settings.model_copy(update={"cloud_url": f"http://127.0.0.1:{free_port()}"})
    daemon = await daemons.start(hub, settings=away)
    await daemon.wait_status(running)

    body = assert_refusal(await daemon.call("POST", "/v1/register", OWNER), 502)

    assert "unreachable" in body["error"]
    assert not hub.settings.credentials_path.exists()


async def test_a_cloud_refusing_the_registration_is_502_in_its_own_words(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await waiting_daemon(devcloud, tmp_path, daemons)
    refusal = json.dumps({"detail": "this account may not add more hubs"})
    devcloud.fail_next("/api/hubs/register/", 403, body=refusal)

    body = assert_refusal(await daemon.call("POST", "/v1/register", OWNER), 502)

    assert "may not add more hubs" in body["error"]
    assert not daemon.settings.credentials_path.exists()


async def test_two_registrations_at_once_one_wins_the_other_is_409_nothing_half_saved(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    daemon = await waiting_daemon(devcloud, tmp_path, daemons)
    hubs_before = {h.hub_id for h in devcloud.hubs()}

    first, second = await asyncio.gather(
        daemon.call("POST", "/v1/register", {**OWNER, "name": "First"}),
        daemon.call("POST", "/v1/register", {**OWNER, "name": "Second"}),
    )

    answers = sorted([first, second], key=lambda a: a[0])
    assert [code for code, _ in answers] == [201, 409], answers
    winner = answers[0][1]
    assert_refusal(answers[1], 409)
    # Exactly one hub was made in the Cloud, and it is the one on disk and linked.
    made = {h.hub_id for h in devcloud.hubs()} - hubs_before
    assert made == {winner["hub_id"]}
    saved = tomllib.loads(daemon.settings.credentials_path.read_text())
    assert saved["hub_id"] == winner["hub_id"]
    status = await daemon.wait_status(connected)
    assert status["hub_id"] == winner["hub_id"]


async def test_any_json_body_gets_an_answer_of_the_contract_never_a_500(
    hub: HubEnv, daemons: Daemons
) -> None:
    # A registered hub: a well-formed body is refused (409) before the Cloud is asked,
    # so every body hypothesis makes is answered by the daemon alone.
    daemon = await daemons.start()
    await daemon.wait_status(connected)
    socket_path = hub.settings.control_socket
    texts = st.text(max_size=40)
    values = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
    field = values | st.lists(values, max_size=3) | st.dictionaries(texts, values, max_size=3)
    # Passwords with a mark of their own, so that finding one in an answer means it leaked.
    marked = texts.map(lambda text: f"Pw#{text}#q7")
    bodies = st.fixed_dictionaries(
        {},
        optional={
            "email": field,
            "password": field | marked,
            "name": field,
            "address": field,
            "force": field,
        },
    ) | st.dictionaries(texts, field, max_size=4)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(body: dict[str, Any]) -> None:
        answer = request(socket_path, "POST", "/v1/register", body, timeout=30)
        assert answer is not None
        code, reply = answer
        assert code in (409, 422), (body, answer)
        assert reply["error"] and reply["hint"]
        password = body.get("password")
        if isinstance(password, str) and password.startswith("Pw#"):
            assert password not in json.dumps(reply, ensure_ascii=False)

    await asyncio.to_thread(check)
    daemon.assert_running()
    assert (await daemon.wait_status(connected))["hub_id"] == hub.hub_id
