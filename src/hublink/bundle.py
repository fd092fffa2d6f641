"""``hublink support-bundle``: one ``.tar.gz`` a shop can send to support, with no secret in it.

    hublink-support-<host>-<time>/
      README.txt     what each file is, and what could not be collected and why
      versions.txt   hublink, Python, frpc -v, the OS (/etc/os-release), the kernel
      config.toml    the effective settings (file, HUBLINK_* variables, defaults), secrets masked
      status.json    ``hublink status --json``
      doctor.json    ``hublink doctor --json``
      frpc.toml      ``{state_dir}/frpc.toml``, its token and admin password masked
      metrics.txt    the running daemon's ``GET /metrics`` (a note when none runs)
      journal.txt    ``journalctl -u hublink -n 2000 --no-pager`` (a note without journalctl)

Secrets are kept out twice over: each member masks what it knows to be secret
(settings as ``SecretStr``, frpc.toml's keys), and then every member goes
through the masking of the log lines plus the exact values of every secret on
this box (the hub's token, the fleet frps token, frpc's admin password, the
local page's setup code), whatever text they turn up in. The archive is
written atomically, mode 0600, and never over an existing file unless asked.
"""

from __future__ import annotations

import asyncio
import io
import json
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hublink import __version__, statedir
from hublink.config import Settings
from hublink.errors import ConfigError, HublinkError
from hublink.fsutil import atomic_write, create_once
from hublink.logs import MASK, mask_text

#: How many journal lines of the unit (the issue's figure).
JOURNAL_LINES = 2000
#: Seconds any one outside command (journalctl, frpc -v) may take.
COMMAND_TIMEOUT = 30.0
OS_RELEASE = Path("/etc/os-release")
#: frpc.toml's secrets (contract section 3), by TOML table and key.
FRPC_SECRETS = (("metadatas", "token"), ("auth", "token"), ("webServer", "password"))

README = """hublink support bundle, made {made} on {host} by hublink {version}.

versions.txt   hublink, Python, frpc, the operating system
config.toml    the settings hublink runs with (file + HUBLINK_* variables + defaults)
status.json    `hublink status --json`
doctor.json    `hublink doctor --json`
frpc.toml      the tunnel's frpc configuration
metrics.txt    the running daemon's Prometheus metrics
journal.txt    the last {lines} lines of `journalctl -u hublink`

Every secret (the hub's token, the fleet frps token, frpc's admin password, the
local page's setup code) is replaced by {mask}.
"""


@dataclass
class Bundle:
    """The members collected so far, the notes on what is missing, the secrets to mask."""

    members: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def add(self, name: str, text: str) -> None:
        """Add a member (masked when the archive is made)."""
        self.members[name] = text

    def note(self, text: str) -> None:
        """Say in README.txt what could not be collected, and why."""
        self.notes.append(text)

    def masked(self, text: str) -> str:
        """``text`` with every known secret value and every secret-shaped substring masked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return mask_text(text)


def default_output(now: float | None = None) -> Path:
    """``hublink-support-<host>-<UTC time>.tar.gz`` in the current folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return Path(f"hublink-support-{socket.gethostname()}-{stamp}.tar.gz")


def collect(settings: Settings | None, config_error: ConfigError | None, path: Path) -> Bundle:
    """Everything the bundle holds; ``settings`` is None when the configuration did not load."""
    bundle = Bundle()
    bundle.add("versions.txt", _versions(settings))
    if settings is None:
        assert config_error is not None
        bundle.note(f"the configuration does not load: {config_error}")
        bundle.add(
            "config.toml", f"# the configuration ({path}) does not load:\n# {config_error}\n"
        )
        bundle.add("doctor.json", _doctor(None, config_error, path))
        return bundle
    _learn_secrets(bundle, settings)
    bundle.add("config.toml", _config(settings, path))
    bundle.add("status.json", _status(bundle, settings))
    bundle.add("doctor.json", _doctor(settings, None, path))
    bundle.add("frpc.toml", _frpc_config(bundle, settings))
    bundle.add("metrics.txt", _metrics(bundle, settings))
    bundle.add("journal.txt", _journal(bundle))
    return bundle


def write(bundle: Bundle, output: Path, *, force: bool) -> list[str]:
    """Write the archive to ``output`` (0600, atomically); the names of its members.

    Raises:
        HublinkError: ``output`` exists and ``force`` is false, or it cannot be written.
    """
    top = output.name.removesuffix(".tar.gz").removesuffix(".tgz") or "hublink-support"
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    readme = README.format(
        made=made, host=socket.gethostname(), version=__version__, lines=JOURNAL_LINES, mask=MASK
    )
    if bundle.notes:
        readme += "\nNot collected:\n" + "".join(f"- {note}\n" for note in bundle.notes)
    members = {"README.txt": readme, **bundle.members}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in members.items():
            data = bundle.masked(text).encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    try:
        if force:
            atomic_write(output, buffer.getvalue())
        elif not create_once(output, buffer.getvalue()):
            raise HublinkError(
                f"{output} exists already; hublink support-bundle does not overwrite it",
                hint="pass --force to replace it, or choose another --output",
            )
    except OSError as err:
        raise HublinkError(f"cannot write {output}: {err.strerror or err}") from None
    return list(members)


# --- the members ---------------------------------------------------------------------


def _learn_secrets(bundle: Bundle, settings: Settings) -> None:
    from hublink.credentials import CredentialStore

    if settings.tunnel.server_token is not None:
        bundle.secrets.add(settings.tunnel.server_token.get_secret_value())
    try:
        creds = CredentialStore(settings.state_dir).load()
    except HublinkError:
        creds = None  # status.json and doctor.json say why
    if creds is not None:
        bundle.secrets.add(creds.tunnel_token.get_secret_value())
    frpc = _read_toml(settings.state_dir / statedir.FRPC_CONFIG) or {}
    for table, key in FRPC_SECRETS:
        value = frpc.get(table, {}).get(key) if isinstance(frpc.get(table), dict) else None
        if isinstance(value, str) and value:
            bundle.secrets.add(value)
    try:
        code = (settings.state_dir / statedir.WEB_CODE).read_text().strip()
    except OSError:
        code = ""
    if code:
        bundle.secrets.add(code)


def _versions(settings: Settings | None) -> str:
    lines = [
        f"hublink {__version__}",
        f"Python {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"kernel {platform.system()} {platform.release()} {platform.machine()}",
    ]
    frpc_path = settings.tunnel.frpc_path if settings is not None else "frpc"
    frpc = shutil.which(frpc_path)
    lines.append(
        f"frpc {_run([frpc, '-v']).strip()} ({frpc})" if frpc else f"frpc: {frpc_path} not found"
    )
    try:
        lines += ["", f"{OS_RELEASE}:", OS_RELEASE.read_text().strip()]
    except OSError as err:
        lines.append(f"{OS_RELEASE}: {err.strerror or err}")
    return "\n".join(lines) + "\n"


def _config(settings: Settings, path: Path) -> str:
    # SecretStr dumps as "**********"; None has no TOML spelling and means "unset".
    data = _without_none(settings.model_dump(mode="json"))
    head = (
        f"# The effective settings: {path}, then HUBLINK_* variables, then defaults.\n"
        "# Secrets masked.\n\n"
    )
    return head + tomli_w.dumps(data)


def _status(bundle: Bundle, settings: Settings) -> str:
    from hublink.control import status_now
    from hublink.status import offline_status

    try:
        status: Any = status_now(settings.control_socket) or offline_status(settings)
    except HublinkError as err:
        bundle.note(f"status: {err}")
        return json.dumps({"error": str(err)}, indent=2) + "\n"
    return json.dumps(status, indent=2) + "\n"


def _doctor(settings: Settings | None, error: ConfigError | None, path: Path) -> str:
    from hublink import doctor

    if settings is None:
        assert error is not None
        report = doctor.config_report(error)
    else:
        report = asyncio.run(doctor.run_checks(settings, config_path=path))
    return json.dumps(report.as_json(), indent=2) + "\n"


def _frpc_config(bundle: Bundle, settings: Settings) -> str:
    path = settings.state_dir / statedir.FRPC_CONFIG
    config = _read_toml(path)
    if config is None:
        bundle.note(f"frpc.toml: {path} is missing or not TOML (frpc has not run yet?)")
        return f"# {path} is missing or is not TOML\n"
    for table, key in FRPC_SECRETS:
        section = config.get(table)
        if isinstance(section, dict) and key in section:
            section[key] = MASK
    return f"# {path}, secrets masked\n\n" + tomli_w.dumps(config)


def _metrics(bundle: Bundle, settings: Settings) -> str:
    from hublink.control import metrics_now

    text = metrics_now(settings.control_socket)
    if text is None:
        bundle.note(f"metrics: no daemon answered on {settings.control_socket}")
        return f"# no running daemon answered on {settings.control_socket}\n"
    return text


def _journal(bundle: Bundle) -> str:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        bundle.note("journal: journalctl is not installed (no systemd journal on this box)")
        return "# journalctl is not installed\n"
    argv = [journalctl, "-u", "hublink", "-n", str(JOURNAL_LINES), "--no-pager"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        bundle.note(f"journal: {' '.join(argv)} failed: {err}")
        return f"# {' '.join(argv)} failed: {err}\n"
    if done.returncode != 0:
        why = done.stderr.strip()[-500:] or f"exit status {done.returncode}"
        bundle.note(f"journal: {' '.join(argv)} failed: {why}")
        return f"# {' '.join(argv)} failed: {why}\n{done.stdout}"
    return done.stdout


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"(failed: {err})"
    return done.stdout or done.stderr


def _read_toml(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
