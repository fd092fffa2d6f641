"""Shared fixtures: isolated settings, the real frp binaries; the helpers' fixtures as plugins."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hublink.logs import set_hub_id
from support.timing import TIME_FACTOR, scaled

ROOT = Path(__file__).resolve().parent.parent

# Fixtures living in tests/support/, usable by every test without an import.
pytest_plugins = [
    "support.cli",
    "support.cloud",
    "support.daemon",
    "support.network",
    "support.scripted_cloud",
    "support.tunnel",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stretch every test's timeout (pytest-timeout) by ``HUBLINK_TEST_TIME_FACTOR``."""
    if TIME_FACTOR == 1:
        return
    default = float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        given = marker.args[0] if marker and marker.args else None
        if marker and "timeout" in marker.kwargs:
            given = marker.kwargs["timeout"]
        base = float(given) if given is not None else default
        if base > 0:
            item.add_marker(pytest.mark.timeout(scaled(base)), append=False)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the machine's /etc/hublink or a developer's HUBLINK_* variables."""
    for key in list(os.environ):
        if key.startswith("HUBLINK_") and key != "HUBLINK_FRP_BIN":
            monkeypatch.delenv(key)
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HUBLINK_CONFIG", str(tmp_path / "hublink.toml"))
    (tmp_path / "hublink.toml").write_text("")
    yield
    # A daemon run in-process leaves its hub id on the process's log lines.
    set_hub_id(None)


@pytest.fixture(scope="session")
def frp_bin() -> Path:
    """The folder holding the real frpc and frps 0.65.0 (`make frp` puts them there).

    Missing binaries fail the test rather than skip it: the tunnel is only
    proven with the real thing.
    """
    folder = Path(os.environ.get("HUBLINK_FRP_BIN", ROOT / ".cache" / "frp" / "bin"))
    for name in ("frpc", "frps"):
        binary = folder / name
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            pytest.fail(f"{binary} is missing or not executable; run `make frp`")
    return folder


@pytest.fixture(scope="session")
def age_bin() -> str:
    """The standard ``age`` tool (`make tools` installs it)."""
    found = shutil.which("age")
    if not found:
        pytest.fail("age is not installed; run `make tools`")
    return found
