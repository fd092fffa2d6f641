"""The one way tests run the real ``hublink`` command line: a child process, as a user would.

    result = run_hublink("status", "--json", env=make_child_env(hub.settings))
    assert result.returncode == 0, result.stderr

:func:`run_hublink` runs a command to completion (from async tests:
``await asyncio.to_thread(run_hublink, ...)``). Tests that need the child while
it runs (a terminal, a closed pipe, the daemon) start :data:`HUBLINK_COMMAND`
themselves; :class:`support.daemon.HublinkProcess` does so for ``hublink run``.
:class:`HubBox` is a hub box seen from the shell, for the ``register`` flows;
``support.terminal`` runs the CLI on a pseudo-terminal, for the prompts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from hublink.config import Settings
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from support.timing import scaled

#: The argv prefix that runs the CLI of the hublink under test.
HUBLINK_COMMAND: tuple[str, ...] = (sys.executable, "-m", "hublink")

#: Proxy variables of the developer's shell: a child must reach 127.0.0.1 directly.
PROXY_VARIABLES = frozenset(
    {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"}
)


def run_hublink(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | bytes | None = None,
    config: Path | None = None,
    timeout: float = 60.0,
    umask: int = -1,
    preexec_fn: Callable[[], None] | None = None,
    via: Sequence[str] = (),
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``hublink [--config CONFIG] ARGS`` to completion; its exit code and text output.

    Args:
        env: the child's whole environment; by default the test's own (which
            ``conftest`` already stripped of the developer's ``HUBLINK_*``).
        stdin: its standard input, text or raw bytes; by default an empty stream.
        config: passed as ``--config`` before the command.
        timeout: seconds as the test chose them (scaled by ``HUBLINK_TEST_TIME_FACTOR``).
        umask: the child's umask (-1: the test's own).
        preexec_fn: run in the child before ``hublink`` starts (a resource limit, say).
        via: a command that runs hublink for us (``setpriv …``), put before it.
        cwd: the child's working folder (by default the test's).

    Returns:
        The finished process; stdout and stderr decoded as UTF-8 (a byte that
        is not is shown as U+FFFD, never an exception in the test).

    Raises:
        subprocess.TimeoutExpired: the command outlived ``timeout``.
    """
    argv = [
        *via,
        *HUBLINK_COMMAND,
        *(("--config", str(config)) if config is not None else ()),
        *args,
    ]
    raw = subprocess.run(
        argv,
        input=stdin.encode() if isinstance(stdin, str) else (stdin or b""),
        capture_output=True,
        timeout=scaled(timeout),
        env=dict(env) if env is not None else None,
        umask=umask,
        preexec_fn=preexec_fn,
        cwd=cwd,
        check=False,
    )
    return subprocess.CompletedProcess(
        raw.args,
        raw.returncode,
        raw.stdout.decode("utf-8", "replace"),
        raw.stderr.decode("utf-8", "replace"),
    )


def export_settings(settings: Settings, **extra: str) -> dict[str, str]:
    """``HUBLINK_*`` variables that rebuild ``settings`` in a child process, plus ``extra``."""
    env = {
        "HUBLINK_CLOUD_URL": settings.cloud_url,
        "HUBLINK_STATE_DIR": str(settings.state_dir),
        "HUBLINK_RUNTIME_DIR": str(settings.runtime_dir),
        "HUBLINK_LOG__LEVEL": "debug",
        "HUBLINK_LOG__FORMAT": "json",
    }
    env["HUBLINK_HUB__LOCAL_PORT"] = str(settings.hub.local_port)
    env["HUBLINK_OUTBOX__MAX_PENDING"] = str(settings.outbox.max_pending)
    for key, value in settings.tunnel.model_dump().items():
        if value is not None and key != "server_token":
            env[f"HUBLINK_TUNNEL__{key.upper()}"] = (
                str(value).lower() if key == "enabled" else str(value)
            )
    if settings.hooks:
        env["HUBLINK_HOOKS"] = json.dumps({k: list(v) for k, v in settings.hooks.items()})
        env["HUBLINK_HOOKS_TIMEOUT"] = str(settings.hooks_timeout)
    if settings.backup.database is not None:
        env["HUBLINK_BACKUP__DATABASE"] = str(settings.backup.database)
    if settings.backup.schedule is not None:
        env["HUBLINK_BACKUP__SCHEDULE"] = settings.backup.schedule
        env["HUBLINK_BACKUP__SCHEDULE_JITTER"] = str(settings.backup.schedule_jitter)
    if settings.metrics.listen is not None:
        env["HUBLINK_METRICS__LISTEN"] = settings.metrics.listen
    if settings.tls.ca_file is not None:
        env["HUBLINK_TLS__CA_FILE"] = str(settings.tls.ca_file)
    for key, value in settings.websocket.model_dump().items():
        env[f"HUBLINK_WEBSOCKET__{key.upper()}"] = str(value)
    env.update(extra)
    return env


def make_child_env(settings: Settings | None = None, /, **variables: str) -> dict[str, str]:
    """A child's environment: the test's, minus ``HUBLINK_*`` and proxies, plus ``settings``.

    ``HUBLINK_CONFIG`` stays (the test's empty config file) unless ``variables``
    replace it; ``variables`` are set last.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HUBLINK_") and key not in PROXY_VARIABLES
    }
    env["HUBLINK_CONFIG"] = os.environ["HUBLINK_CONFIG"]
    if settings is not None:
        env.update(export_settings(settings))
    env.update(variables)
    return env


# --- a hub box seen from the shell: `hublink register` -------------------------------------


@dataclass
class Run:
    """A finished ``hublink`` run, timed."""

    code: int
    stdout: str
    stderr: str
    elapsed: float

    def log_events(self) -> list[dict[str, object]]:
        """stderr's JSON log lines, parsed (every line must be one)."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


async def run_hublink_timed(
    *args: str,
    env: dict[str, str],
    stdin: str = "",
    preexec_fn: Callable[[], None] | None = None,
) -> Run:
    """:func:`run_hublink` in a thread, with the time it took."""
    started = time.monotonic()
    result = await asyncio.to_thread(
        run_hublink, *args, env=env, stdin=stdin, timeout=50, preexec_fn=preexec_fn
    )
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


@dataclass
class HubBox:
    """A hub box: its environment and where its files go."""

    env: dict[str, str]
    state_dir: Path
    config_dir: Path

    @property
    def credentials(self) -> Path:
        """Where ``register`` saves the credentials."""
        return self.state_dir / "credentials.toml"

    def written(self) -> set[str]:
        """The names of the files hublink left in the state dir (its lock file aside)."""
        if not self.state_dir.exists():
            return set()
        return {p.name for p in self.state_dir.iterdir()} - {".credentials.lock"}

    async def register(
        self,
        *extra: str,
        password: str = DEMO_PASSWORD,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Run:
        """``hublink register`` as the demo owner, the password on stdin, ``extra`` appended."""
        return await run_hublink_timed(
            "register",
            "--email",
            DEMO_EMAIL,
            "--password-stdin",
            "--address",
            "Main Street 1",
            *extra,
            env=self.env,
            stdin=password + "\n",
            preexec_fn=preexec_fn,
        )


def make_hub_box(tmp_path: Path, cloud_url: str) -> HubBox:
    """A box whose ``hublink`` talks to ``cloud_url``, logs JSON at debug level, names its hub."""
    config_dir = Path(os.environ["HUBLINK_CONFIG"]).parent
    state_dir = tmp_path / "state"
    env = dict(os.environ)
    env.update(
        HUBLINK_CLOUD_URL=cloud_url,
        HUBLINK_STATE_DIR=str(state_dir),
        HUBLINK_LOG__FORMAT="json",
        HUBLINK_LOG__LEVEL="debug",
        HUBLINK_HUB__NAME="Corner Shop",
    )
    return HubBox(env=env, state_dir=state_dir, config_dir=config_dir)


@pytest.fixture
def box(devcloud: DevCloud, tmp_path: Path) -> HubBox:
    """A hub box, not registered yet, in front of ``devcloud``."""
    return make_hub_box(tmp_path, devcloud.url)
