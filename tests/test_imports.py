"""Lazy imports that the cold start and the idle footprint depend on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from hublink.control import request
from support.cli import make_child_env
from support.cloud import HubEnv
from support.daemon import Daemons, HublinkProcess
from support.polling import wait_until


def loaded_after(
    code: str, modules: tuple[str, ...], env: dict[str, str] | None = None
) -> list[str]:
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env=env,
    ).stdout
    return out.splitlines()[-1].split()[1:]


def test_version_loads_no_heavy_library() -> None:
    heavy = ("pydantic", "aiohttp", "structlog", "websockets", "jwt", "pyrage", "zstandard")
    code = "from hublink.cli import main\nmain(['--version'])"
    assert loaded_after(code, heavy) == []


def test_the_links_path_loads_no_aiohttp() -> None:
    # The daemon imports these in a worker thread while its link connects.
    from hublink.localservers import HEAVY_MODULES

    code = "import hublink.daemon"
    heavy = ("aiohttp", "jinja2", "babel", "hublink.tunnel.admin", *HEAVY_MODULES)
    assert loaded_after(code, heavy) == []


def test_the_daemon_does_not_carry_the_enrollment_and_backup_libraries() -> None:
    # pyrage and zstandard load at the first backup request.
    code = "import hublink.daemon, hublink.link.connection, hublink.tls, hublink.control"
    assert loaded_after(code, ("jwt", "cryptography", "pyrage", "zstandard")) == []


def test_the_rest_client_loads_jwt_only_to_verify_a_token() -> None:
    # The daemon's backup uploads use the REST client; pyjwt and cryptography
    # (about 8 MiB) are for checking the owner's token at registration only.
    code = "import hublink.cloud.client"
    assert loaded_after(code, ("jwt", "cryptography")) == []


#: What ``hublink status`` and ``hublink send`` must not load: the link's and
#: the daemon's libraries (aiohttp alone builds two SSL contexts at import),
#: and the enrollment and backup ones.
NOT_FOR_THE_QUICK_COMMANDS = (
    "aiohttp",
    "websockets",
    "jwt",
    "cryptography",
    "pyrage",
    "zstandard",
    "prometheus_client",
    "hublink.daemon",
    "hublink.link.connection",
    "hublink.tunnel.supervisor",
)


def quick_command_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "hublink.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBLINK_", "PYDANTIC_"))}
    env.update(
        HUBLINK_CONFIG=str(tmp_path / "hublink.toml"),
        HUBLINK_STATE_DIR=str(tmp_path / "state"),
        HUBLINK_RUNTIME_DIR=str(tmp_path / "run"),
    )
    return env


def run_cli(argv: list[str]) -> str:
    # The probe's own output goes last; the command's goes to a null stream.
    return (
        "import contextlib, io\nfrom hublink.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    main({argv!r})"
    )


def test_status_loads_no_daemon_link_or_backup_library(tmp_path: Path) -> None:
    code = run_cli(["status"])
    assert loaded_after(code, NOT_FOR_THE_QUICK_COMMANDS, quick_command_env(tmp_path)) == []


def test_send_loads_no_daemon_link_or_backup_library(tmp_path: Path) -> None:
    code = run_cli(["send", "user_sync", "--data", '{"users": []}'])
    assert loaded_after(code, NOT_FOR_THE_QUICK_COMMANDS, quick_command_env(tmp_path)) == []


def test_the_cli_skips_pydantics_plugin_scan(tmp_path: Path) -> None:
    # The scan reads every installed distribution's metadata; hublink has no plugin.
    code = run_cli(["status"]) + (
        "\nfrom pydantic.plugin import _loader\nprint('scanned:', _loader._plugins is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env=quick_command_env(tmp_path),
    ).stdout
    assert out.splitlines()[-1] == "scanned: False"


def test_the_daemon_loads_the_pages_libraries_only_when_the_page_is_on() -> None:
    # Jinja2 and Babel load in _start_page; the doctor's checks when asked for.
    code = "import hublink.daemon, hublink.actions, hublink.control.server"
    page = ("jinja2", "babel", "hublink.web.app", "hublink.doctor.runner")
    assert loaded_after(code, page) == []


def test_reading_the_setup_code_loads_no_web_library() -> None:
    # `hublink status` reads web-code through hublink.web.code (a lazy package).
    code = "from hublink.web.code import read_code"
    assert loaded_after(code, ("aiohttp", "jinja2", "babel")) == []


def test_packages_resolve_every_name_they_export_and_load_it_only_when_asked() -> None:
    code = (
        "import importlib, sys\n"
        "loaded, unlisted = [], []\n"
        "for package in ('hublink.link', 'hublink.tunnel', 'hublink.backup', 'hublink.web'):\n"
        "    module = importlib.import_module(package)\n"
        "    unlisted += sorted(set(module.__all__) - set(dir(module)))\n"
        "    loaded += [m for m in sys.modules if m.startswith(package + '.')]\n"
        "    for name in module.__all__:\n"
        "        getattr(module, name)\n"
        "print('unlisted by dir():', *unlisted)\n"
        "print('loaded:', *loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.splitlines()[-2:] == ["unlisted by dir():", "loaded:"]


#: What a running daemon spares ``status`` and ``send``: the whole settings
#: model, the message models, the event loop and the logging library.
SPARED_BY_A_RUNNING_DAEMON = (
    *NOT_FOR_THE_QUICK_COMMANDS,
    "pydantic",
    "pydantic_settings",
    "structlog",
    "asyncio",
    "tempfile",
    "hublink.config",
    "hublink.link.messages",
    # A bug's report, the setup code's generator, the status object's TypedDicts.
    "traceback",
    "secrets",
    "hublink.statusreport",
)


@pytest.fixture
async def connected(daemons: Daemons) -> HublinkProcess:
    """A daemon of the test's hub, connected to its Cloud."""
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    return daemon


@pytest.mark.usefixtures("connected")
async def test_a_running_daemon_answers_status_and_send_before_any_settings_load(
    hub: HubEnv,
) -> None:
    env = make_child_env(hub.settings)
    for argv in (
        ["status"],
        ["status", "--json"],
        ["send", "user_sync", "--data", '{"users": []}'],
    ):
        loaded = await asyncio.to_thread(
            loaded_after, run_cli(argv), SPARED_BY_A_RUNNING_DAEMON, env
        )
        assert loaded == [], argv
    # The event went through the daemon, which queued it and sent it.
    await wait_until(lambda: any(e["type"] == "user_sync" for e in hub.cloud.events(hub.hub_id)))


#: What an idle, connected daemon (page and metrics on, as shipped) must not carry:
#: enrollment's and backups' libraries load at their first use.
NOT_IN_AN_IDLE_DAEMON = (
    "jwt",
    "cryptography",
    "pyrage",
    "zstandard",
    "hublink.enroll",
    "hublink.backup.service",
    "hublink.backup.pipeline",
    "hublink.doctor.runner",
)


async def debug_of(hub: HubEnv) -> dict[str, Any]:
    """The running daemon's ``GET /v1/debug`` answer."""
    answer = await asyncio.to_thread(request, hub.settings.control_socket, "GET", "/v1/debug")
    assert answer is not None and answer[0] == 200
    return cast("dict[str, Any]", answer[1])


@pytest.mark.usefixtures("connected")
async def test_an_idle_connected_daemon_loads_no_enrollment_backup_or_doctor_library(
    hub: HubEnv,
) -> None:
    loaded = set((await debug_of(hub))["modules"])
    assert "hublink.link.connection" in loaded  # the answer lists what is loaded
    assert sorted(loaded.intersection(NOT_IN_AN_IDLE_DAEMON)) == []


@pytest.mark.usefixtures("connected")
async def test_a_started_daemon_keeps_its_start_up_heap_out_of_full_collections(
    hub: HubEnv,
) -> None:
    # A full collection that walks every module and model stops the loop for tens of
    # milliseconds in the middle of the Cloud's commands (BENCHMARKS.md, paced p99).
    heap = (await debug_of(hub))["gc"]
    assert heap["frozen"] > 4 * heap["tracked"], heap
