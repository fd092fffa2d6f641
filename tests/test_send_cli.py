"""``hublink send`` as a user runs it: a real subprocess, a real outbox."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hublink.cli import main
from hublink.link.messages import parse_inbound
from hublink.link.notices import StateStore
from hublink.link.outbox import Outbox
from support.daemon import settings_env, spawn
from support.devcloud import HubEnv
from support.polling import wait_until

__all__ = ["spawn"]  # the fixture, imported for pytest

INSTALLED = {"plugin_id": "inventory", "version": "1.1", "installed_at": "2025-05-01T10:00:00Z"}
USERS = {
    "users": [
        {"cloud_user_id": 12, "email": "ana@shop.example", "last_activity": "2025-05-01T09:00:00Z"}
    ]
}


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    state, runtime = tmp_path / "state", tmp_path / "run"
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(state))
    monkeypatch.setenv("HUBLINK_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("HUBLINK_LOG__FORMAT", "json")
    return state, runtime


def send(event_type: str, data: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hublink", "send", event_type, "--data", data],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def queued(state: Path) -> list[dict[str, object]]:
    outbox = Outbox.open(state)
    try:
        return [json.loads(item.frame) for item in outbox.peek(100)]
    finally:
        outbox.close()


def test_send_queues_durably_without_a_daemon(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    first = send("user_sync", json.dumps(USERS))
    second = send("plugin_installed", json.dumps(INSTALLED))
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    ids = [UUID(first.stdout.strip()), UUID(second.stdout.strip())]
    assert all(i.version == 4 for i in ids)
    events = queued(state)
    assert [e["id"] for e in events] == [str(i) for i in ids]
    assert events[0]["type"] == "user_sync"
    # The Hub's JSON goes out as the Hub wrote it (its integer id included).
    assert events[0] == {"type": "user_sync", "id": str(ids[0]), **USERS}
    assert events[1] == {"type": "plugin_installed", "id": str(ids[1]), **INSTALLED}


def test_send_keeps_a_given_id_and_queues_it_once(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    given = str(uuid4())
    data = json.dumps({**INSTALLED, "id": given})
    assert [send("plugin_installed", data).stdout.strip() for _ in range(2)] == [given, given]
    assert [e["id"] for e in queued(state)] == [given]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"plugin_id": "x",', "--data is not valid JSON"),
        ("[1, 2]", "--data must be a JSON object, not list"),
        ('{"plugin_id": "x", "version": "1"}', "installed_at: required"),
        (
            '{"plugin_id": "x", "version": "1", "installed_at": "last tuesday"}',
            "installed_at: Input should be a valid datetime",
        ),
    ],
)
def test_bad_data_is_a_usage_error(dirs: tuple[Path, Path], data: str, expected: str) -> None:
    state, _ = dirs
    result = send("plugin_installed", data)
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stdout == ""
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


def test_unknown_type_is_a_usage_error(dirs: tuple[Path, Path]) -> None:
    result = send("backup_completed", "{}")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_full_outbox_refuses_clearly(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, _ = dirs
    monkeypatch.setenv("HUBLINK_OUTBOX__MAX_PENDING", "2")
    assert [send("user_sync", json.dumps(USERS)).returncode for _ in range(2)] == [0, 0]
    result = send("plugin_installed", json.dumps(INSTALLED))
    assert result.returncode == 1
    assert "already holds 2 events" in result.stderr
    assert "NOT queued" in result.stderr
    assert [e["type"] for e in queued(state)] == ["user_sync", "user_sync"]


def test_unusable_state_dir_is_a_clear_error(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plain-file").write_text("")
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(tmp_path / "plain-file" / "state"))
    result = send("user_sync", json.dumps(USERS))
    assert result.returncode == 1
    assert "cannot open the outbox" in result.stderr
    assert "plain-file/state/outbox.sqlite3" in result.stderr


def test_plugin_installed_clears_the_pending_update(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    store = StateStore.load(state)
    update = parse_inbound(
        json.dumps(
            {
                "type": "plugin_update_available",
                "plugin_id": "inventory",
                "current_version": "1.0",
                "new_version": "1.1",
                "download_url": "https://cdn.example/i.zip",
            }
        )
    )
    store.record_plugin_update(update)  # type: ignore[arg-type]
    store.close()
    assert send("plugin_installed", json.dumps(INSTALLED)).returncode == 0
    assert StateStore.load(state).snapshot()["plugin_updates"] == []


async def test_a_running_daemon_queues_what_send_hands_it(
    hub_settings: HubEnv, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    # The CLI's own state dir is unusable: only the daemon's socket can take the
    # event, as for a user in group hublink who may not write /var/lib/hublink.
    daemon = await spawn()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")},
        **settings_env(hub_settings.settings),
        "HUBLINK_CONFIG": str(tmp_path / "none.toml"),
        "HUBLINK_STATE_DIR": "/proc/hublink-cannot-be-here",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hublink", "send", *args]
        return subprocess.run(
            command, check=False, capture_output=True, text=True, env=env, timeout=30
        )

    sent = await asyncio.to_thread(run, "user_sync", "--data", json.dumps(USERS))
    assert sent.returncode == 0, sent.stderr
    event_id = sent.stdout.strip()
    cloud = hub_settings.cloud
    await wait_until(
        lambda: any(e.get("id") == event_id for e in cloud.events(hub_settings.hub_id)),
        what="the event at the Cloud",
    )
    refused = await asyncio.to_thread(run, "plugin_installed", "--data", '{"plugin_id": "x"}')
    assert refused.returncode == 2
    assert "version" in refused.stderr and "Traceback" not in refused.stderr


# --- data JSON cannot carry faithfully (issue 10, item 6) -------------------------------

BIG_INT = "1" * 5000


def test_a_5000_digit_integer_is_a_usage_error(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    data = json.dumps(INSTALLED)[:-1] + f', "n": {BIG_INT}}}'
    result = send("plugin_installed", data)
    assert result.returncode == 2
    assert "--data is not valid JSON for hublink: Exceeds the limit (4300 digits)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ('"n": NaN', "NaN is not a JSON number"),
        ('"n": Infinity', "Infinity is not a JSON number"),
        ('"n": -Infinity', "-Infinity is not a JSON number"),
        ('"n": 1e999', "the number 1e999 is out of range"),
        (f'"n": -{BIG_INT}', "Exceeds the limit (4300 digits)"),
        ('"n": "left \\ud83d"', "data.n: holds a lone UTF-16 surrogate"),
        ('"\\udc00": 1', "a key holds a lone UTF-16 surrogate"),
        ('"n": ' + "[" * 10_000 + "]" * 10_000, "nested too deeply"),
    ],
)
def test_json_that_cannot_be_sent_faithfully_is_a_usage_error(
    dirs: tuple[Path, Path], extra: str, named: str
) -> None:
    state, _ = dirs
    result = send("plugin_installed", json.dumps(INSTALLED)[:-1] + f", {extra}}}")
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


def strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} reached the outbox")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("send-fuzz") / "state"


#: Any character, lone surrogates (what "\\ud83d" in JSON becomes) often.
ANY_TEXT = st.text(
    alphabet=st.characters(exclude_categories=()) | st.sampled_from(["\ud83d", "\udc00", "\udcff"]),
    max_size=8,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and ±infinity included
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=3),
    text=st.one_of(st.none(), st.text(max_size=40)),
)
def test_any_data_is_queued_as_strict_json_or_refused_with_exit_2(
    shared_state: Path, fields: dict[str, object], text: str | None
) -> None:
    # Raw text as typed, or a valid event with random extra fields (json.dumps
    # writes NaN, Infinity and lone surrogates as Python would accept them back).
    data = text if text is not None else json.dumps({**INSTALLED, **fields, "id": None})
    os.environ["HUBLINK_STATE_DIR"] = str(shared_state)
    try:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["send", "plugin_installed", "--data", data])
    finally:
        os.environ.pop("HUBLINK_STATE_DIR")
    assert code in (0, 2), err.getvalue()
    event(f"exit {code}")
    if code == 2:
        assert err.getvalue().startswith("hublink: error: "), err.getvalue()
        return
    outbox = Outbox.open(shared_state)
    try:
        (frame,) = [
            item.frame for item in outbox.peek(100_000) if item.id == out.getvalue().strip()
        ]
    finally:
        outbox.close()
    sent = strict_loads(frame)
    assert isinstance(sent, dict)
    assert {k: v for k, v in sent.items() if k not in ("type", "id")} == {
        k: v for k, v in json.loads(data).items() if k not in ("type", "id")
    }


# --- data from a file or stdin (item 11) ------------------------------------------------


def big_user_sync() -> dict[str, object]:
    """A user_sync of about 190 KB: more than a shell passes in one argument."""
    users = [
        {
            "cloud_user_id": n,
            "email": f"cashier-{n}@shop.example",
            "last_activity": "2026-01-01T09:00:00Z",
        }
        for n in range(2_600)
    ]
    return {"users": users}


def send_with(data_option: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hublink", "send", "user_sync", "--data", data_option],
        capture_output=True,
        input=stdin,
        timeout=30,
        check=False,
    )


def test_data_from_a_file_too_big_for_an_argument(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    state, _ = dirs
    users = big_user_sync()
    file = tmp_path / "users.json"
    file.write_text(json.dumps(users))
    assert file.stat().st_size > 131_072  # Linux's limit for one argument
    result = send_with(f"@{file}")
    assert result.returncode == 0, result.stderr
    (event,) = queued(state)
    assert event == {"type": "user_sync", "id": result.stdout.decode().strip(), **users}


@pytest.mark.parametrize("dash", ["-", "@-"])
def test_data_from_stdin(dirs: tuple[Path, Path], dash: str) -> None:
    state, _ = dirs
    users = big_user_sync()
    result = send_with(dash, stdin=json.dumps(users).encode())
    assert result.returncode == 0, result.stderr
    assert queued(state)[0]["users"] == users["users"]


def test_a_bom_at_the_start_of_a_data_file_is_ignored(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    file = tmp_path / "users.json"
    file.write_bytes(b"\xef\xbb\xbf" + json.dumps(USERS).encode())
    assert send_with(f"@{file}").returncode == 0


@pytest.mark.parametrize(
    ("option", "content", "named"),
    [
        (
            "@{tmp}/absent.json",
            None,
            "--data @{tmp}/absent.json: the file {tmp}/absent.json does not exist",
        ),
        ("@{tmp}", None, "--data @{tmp}: {tmp} is a folder, not a file"),
        ("@", None, "--data @ needs a file name"),
        (
            "@{tmp}/latin.json",
            '{"users": [], "n": "ñ"}'.encode("latin-1"),
            "is not UTF-8 text (byte 0xf1",
        ),
        ("@{tmp}/broken.json", b'{"users": [', "--data @{tmp}/broken.json is not valid JSON"),
        ("-", b"", "--data - (stdin) is not valid JSON: Expecting value"),
        ("-", b"\xff\xfe{}", "--data - (stdin) is not UTF-8 text"),
    ],
)
def test_bad_data_files_are_usage_errors_naming_the_file(
    dirs: tuple[Path, Path], tmp_path: Path, option: str, content: bytes | None, named: str
) -> None:
    state, _ = dirs
    option = option.replace("{tmp}", str(tmp_path))
    if content is not None and option.startswith("@"):
        Path(option[1:]).write_bytes(content)
    result = send_with(option, stdin=content if option == "-" else b"")
    assert result.returncode == 2
    assert named.replace("{tmp}", str(tmp_path)) in result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []
