"""The quick paths of ``status`` and ``send``: what they read of the config without the
settings model, the light copy of the event types they check ``send TYPE`` with, and a
daemon that does not answer being asked once, not once per path."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hublink.configfile import DEFAULT_RUNTIME_DIR, control_socket_of
from hublink.link import eventdata, messages
from support.cli import make_child_env, run_hublink


def test_the_send_types_the_cli_checks_are_the_message_models() -> None:
    assert eventdata.APP_EVENT_TYPES == messages.APP_EVENT_TYPES


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HUBLINK_RUNTIME_DIR", raising=False)
    path = tmp_path / "hublink.toml"
    monkeypatch.setenv("HUBLINK_CONFIG", str(path))
    return path


@pytest.mark.parametrize(
    "spelling",
    [
        "runtime_dir = '{dir}'",
        '"runtime_dir" = "{dir}"',
        "'runtime_dir' = '{dir}'",
        '"runtime\\u005fdir" = "{dir}"',
        '"\\u0072untime_dir" = "{dir}"',
        "cloud_url = 'https://x.example'\n\nruntime_dir = \"{dir}\"\n[log]\nlevel = 'info'",
    ],
)
def test_runtime_dir_is_found_however_toml_spells_its_key(
    config: Path, tmp_path: Path, spelling: str
) -> None:
    config.write_text(spelling.format(dir=tmp_path / "run"))
    assert control_socket_of(None) == tmp_path / "run" / "control.sock"


@pytest.mark.parametrize(
    "text",
    ["", "# runtime_dir = '/elsewhere'\n", "[log]\nlevel = 'debug'\n", "[x]\nruntime_dir = '/y'\n"],
)
def test_a_config_that_does_not_set_runtime_dir_means_the_default(config: Path, text: str) -> None:
    config.write_text(text)
    assert control_socket_of(None) == DEFAULT_RUNTIME_DIR / "control.sock"


def test_the_environment_wins_over_the_file(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text("runtime_dir = '/from/the/file'\n")
    monkeypatch.setenv("HUBLINK_RUNTIME_DIR", str(tmp_path / "env"))
    assert control_socket_of(None) == tmp_path / "env" / "control.sock"


@pytest.mark.parametrize(
    "raw",
    [b"runtime_dir = ", b"runtime_dir = 7\n", b"runtime_dir = ''\n", b"\xff runtime_dir"],
)
def test_a_config_the_quick_path_cannot_use_leaves_it_to_the_settings(
    config: Path, raw: bytes
) -> None:
    # None: the command loads the settings, which name what is wrong (exit 78).
    config.write_bytes(raw)
    assert control_socket_of(None) is None


def test_a_named_config_that_is_missing_leaves_it_to_the_settings(tmp_path: Path) -> None:
    assert control_socket_of(str(tmp_path / "missing.toml")) is None


class HungDaemon:
    """A control socket whose daemon accepts connections and never answers (stopped
    with SIGSTOP, say, or stuck): it counts how often it was asked."""

    def __init__(self, path: Path) -> None:
        self.asked: list[str] = []  # the request line of each connection
        self._held: list[socket.socket] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._server.accept()
                self._held.append(conn)
                conn.settimeout(5)
                self.asked.append(conn.recv(4096).split(b"\r\n")[0].decode())

    def close(self) -> None:
        # shutdown() wakes the accept() blocked in the thread; close() alone would not.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(5)
        for conn in self._held:
            conn.close()


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[tuple[HungDaemon, dict[str, str]]]:
    run = tmp_path / "run"
    run.mkdir()
    daemon = HungDaemon(run / "control.sock")
    env = make_child_env(HUBLINK_STATE_DIR=str(tmp_path / "state"), HUBLINK_RUNTIME_DIR=str(run))
    yield daemon, env
    daemon.close()


def test_send_asks_a_daemon_that_does_not_answer_once_then_queues_the_event_itself(
    hung: tuple[HungDaemon, dict[str, str]],
) -> None:
    daemon, env = hung
    sent = run_hublink("send", "user_sync", "--data", '{"users": []}', env=env)
    assert sent.returncode == 0, sent.stderr
    # Asked twice, a daemon that is only slow would queue the event twice.
    assert daemon.asked.count("POST /v1/events HTTP/1.1") == 1, daemon.asked
    daemon.close()
    status = json.loads(run_hublink("status", "--json", env=env).stdout)
    assert status["outbox"]["pending"] == 1


def test_status_asks_a_daemon_that_does_not_answer_once(
    hung: tuple[HungDaemon, dict[str, str]],
) -> None:
    daemon, env = hung
    done = run_hublink("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["daemon"]["running"] is False
    assert daemon.asked == ["GET /v1/status HTTP/1.1"]
