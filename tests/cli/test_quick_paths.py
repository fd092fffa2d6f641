"""The quick paths of ``status`` and ``send``: what they read of the config without the
settings model, and the light copy of the event types they check ``send TYPE`` with."""

from __future__ import annotations

from pathlib import Path

import pytest

from hublink.configfile import DEFAULT_RUNTIME_DIR, control_socket_of
from hublink.link import eventdata, messages


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
