"""``hublink doctor``: the troubleshooting steps as checks, each pass, warn, fail or skip.

    config        the settings load (the CLI reports it when they do not)
    credentials   present, parseable, mode 0600, owned by the running user
    state_dir     exists and writable; runtime_dir likewise; disk_space free
    backup_database  backup.database opens read-only, as the backup opens it
    cloud         GET /api/auth/public-key/ answers 200 with an RS256 key
    tls           the Cloud's certificate verifies (system CAs + tls.ca_file)
    clock         this machine's clock against the Cloud's Date header
    websocket     the hub's token opens the link (or the daemon's link is up)
    frpc          found, executable, version 0.52 or later
    frps          the tunnel server's port accepts TCP
    local_port    the Hub application listens on hub.local_port
    daemon        ``hublink run`` answers on the control socket, and its state
    page          the daemon serves the local page on web.listen (or could bind it)

Network checks run concurrently with a short timeout, so a dead network costs
seconds, not minutes. A check that cannot run because an earlier one failed is
``skip``; only ``fail`` makes the report not ok.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from hublink.config import Settings
from hublink.doctor.check import Check
from hublink.doctor.cloud import cloud_checks, websocket_check
from hublink.doctor.daemon import daemon_check, fetch_daemon, page_check
from hublink.doctor.local import (
    config_check,
    credentials_check,
    database_check,
    dir_check,
    disk_space_check,
)
from hublink.doctor.tunnel import frpc_check, frps_check, local_port_check
from hublink.errors import ConfigError
from hublink.logs import mask_text, register_secret_str

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

#: Patience for each network check, in seconds.
DEFAULT_TIMEOUT = 10.0


@dataclass
class Report:
    """Every check, in a fixed order."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed (warnings are fine)."""
        return all(check.status != "fail" for check in self.checks)

    @property
    def config_failed(self) -> bool:
        """Whether the configuration itself did not load."""
        return any(c.name == "config" and c.status == "fail" for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        """``{"ok": bool, "checks": [{"name", "status", "detail", "hint"}]}``."""
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


def config_report(err: ConfigError) -> Report:
    """The report when the settings do not load: nothing else can be checked."""
    return Report(
        [
            Check("config", "fail", mask_text(err.message), err.hint),
            *(Check(name, "skip", "needs a valid configuration") for name in _LATER_CHECKS),
        ]
    )


_LATER_CHECKS = (
    "credentials",
    "state_dir",
    "runtime_dir",
    "disk_space",
    "backup_database",
    "cloud",
    "tls",
    "clock",
    "websocket",
    "frpc",
    "frps",
    "local_port",
    "daemon",
    "page",
)


async def run_checks(
    settings: Settings, *, config_path: Path | None = None, patience: float = DEFAULT_TIMEOUT
) -> Report:
    """Run every check against ``settings``; never raises for a failed check."""
    register_secret_str(settings.tunnel.server_token)  # masked in whatever a check shows
    report = Report([config_check(settings, config_path)])
    creds, creds_check = credentials_check(settings)
    report.checks.append(creds_check)
    report.checks += [
        dir_check("state_dir", settings.state_dir, required=True),
        dir_check("runtime_dir", settings.runtime_dir, required=False),
        disk_space_check(settings.state_dir),
        await _guard("backup_database", asyncio.to_thread(database_check, settings)),
    ]
    fetched = await _guard("daemon", fetch_daemon(settings))
    daemon_status = fetched if isinstance(fetched, dict) else None
    cloud, websocket, frpc, frps, local = await asyncio.gather(
        _guard("cloud", cloud_checks(settings, patience)),
        _guard("websocket", websocket_check(settings, creds, daemon_status, patience)),
        _guard("frpc", frpc_check(settings, patience)),
        _guard("frps", frps_check(settings, patience)),
        _guard("local_port", local_port_check(settings, patience)),
    )
    report.checks += cloud if isinstance(cloud, list) else [cloud]
    report.checks += [websocket, frpc, frps, local]
    report.checks.append(
        fetched if isinstance(fetched, Check) else daemon_check(settings, daemon_status)
    )
    report.checks.append(await _guard("page", page_check(settings, daemon_status)))
    return report


async def _guard(name: str, work: Awaitable[_T]) -> _T | Check:
    """Run one check; a bug in it becomes a failed check, not a crashed doctor."""
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception as err:
        log.exception("doctor check crashed", check=name)
        return Check(
            name,
            "fail",
            f"the check itself failed: {type(err).__name__}: {mask_text(str(err))}",
            "please report this with the output of: hublink doctor --json",
        )


# --- presentation --------------------------------------------------------------------


def render(report: Report) -> str:
    """The human form: one line per check, its hint below when it did not pass."""
    width = max(len(check.name) for check in report.checks)
    lines = []
    for check in report.checks:
        indent = " " * (width + 8)
        detail = check.detail.replace("\n", "\n" + indent)
        lines.append(f"{check.status.upper():<5} {check.name:<{width}}  {detail}")
        if check.hint and check.status in ("warn", "fail"):
            lines.append(f"{'':<5} {'':<{width}}  hint: {check.hint}")
    failed = sum(check.status == "fail" for check in report.checks)
    warned = sum(check.status == "warn" for check in report.checks)
    lines.append("")
    lines.append("all good" if failed == warned == 0 else f"{failed} failed, {warned} warning(s)")
    return "\n".join(lines)
