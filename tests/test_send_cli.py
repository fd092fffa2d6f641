"""``hublink send`` as a user runs it: a real subprocess, a real outbox."""

from __future__ import annotations

import http.server
import json
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from hublink.link.messages import parse_inbound
from hublink.link.notices import StateStore
from hublink.link.outbox import Outbox

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


class _PokeHandler(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_POST(self) -> None:
        self.seen.append(self.path)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


@pytest.fixture
def daemon_socket(dirs: tuple[Path, Path]) -> Iterator[list[str]]:
    """A unix-socket HTTP listener where the daemon's control socket would be."""
    _, runtime = dirs
    runtime.mkdir()
    seen: list[str] = []
    handler = type("Handler", (_PokeHandler,), {"seen": seen})
    server = socketserver.UnixStreamServer(str(runtime / "control.sock"), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_send_pokes_a_running_daemon(dirs: tuple[Path, Path], daemon_socket: list[str]) -> None:
    result = send("user_sync", json.dumps(USERS))
    assert result.returncode == 0, result.stderr
    assert daemon_socket == ["/v1/poke"]
