"""The shipped systemd files: the unit verifies cleanly and is sandboxed; sysusers/tmpfiles work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "hublink.service"
SYSUSERS = ROOT / "systemd" / "hublink.sysusers"
TMPFILES = ROOT / "systemd" / "hublink.tmpfiles"
SHIPPED_EXEC_START = "ExecStart=/usr/bin/hublink run"
MAX_EXPOSURE = 1.5


def systemd_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run `make tools`")
    return found


def directives(text: str) -> dict[str, list[str]]:
    """``Key`` → every value it is given in the unit (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def installable_unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart= pointing at this venv's hublink.

    `systemd-analyze verify` checks that the ExecStart= binary exists and is
    executable; /usr/bin/hublink does not exist on a development machine.
    Only that one line changes, which the test asserts, so every other line
    verified is the shipped one.
    """
    venv_hublink = Path(sys.executable).parent / "hublink"
    assert venv_hublink.is_file(), "the venv has no hublink entry point; pip install -e ."
    shipped = UNIT.read_text()
    assert shipped.count(SHIPPED_EXEC_START + "\n") == 1
    local = shipped.replace(SHIPPED_EXEC_START, f"ExecStart={venv_hublink} run")
    diff = [(a, b) for a, b in zip(shipped.splitlines(), local.splitlines(), strict=True) if a != b]
    assert diff == [(SHIPPED_EXEC_START, f"ExecStart={venv_hublink} run")]
    copy = tmp_path / "hublink.service"
    copy.write_text(local)
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_unit_verifies_without_a_single_warning(installable_unit: Path) -> None:
    result = verify(installable_unit)
    # Typos in keys only warn, with exit code 0: stderr is the real verdict.
    assert result.stderr == ""
    assert result.stdout == ""
    assert result.returncode == 0


def test_verify_does_report_a_typo(installable_unit: Path) -> None:
    """Guards the test above: an empty stderr means verify read the file and liked it."""
    installable_unit.write_text(
        installable_unit.read_text().replace("ProtectHome=yes", "ProtectHme=yes")
    )
    result = verify(installable_unit)
    assert "Unknown key 'ProtectHme'" in result.stderr


def test_unit_exposure_is_at_most_1_5(installable_unit: Path) -> None:
    result = subprocess.run(
        [systemd_tool("systemd-analyze"), "security", "--offline=true", str(installable_unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    match = re.search(r"Overall exposure level for hublink\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_has_the_operational_settings() -> None:
    found = directives(UNIT.read_text())
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/usr/bin/hublink run",
        "Wants": "network-online.target",
        "After": "network-online.target",
        "Restart": "on-failure",
        "RestartSec": "5s",
        "RestartPreventExitStatus": "77 78",
        "WatchdogSec": "30s",
        "TimeoutStopSec": "15s",
        "KillMode": "mixed",
        "User": "hublink",
        "Group": "hublink",
        "UMask": "0077",
        "StateDirectory": "hublink",
        "StateDirectoryMode": "0700",
        "RuntimeDirectory": "hublink",
        "RuntimeDirectoryMode": "0750",
        "ConfigurationDirectory": "hublink",
        "ConfigurationDirectoryMode": "0750",
        "SyslogIdentifier": "hublink",
        "SyslogLevelPrefix": "yes",
        "ProtectSystem": "strict",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "MemoryDenyWriteExecute": "yes",
    }
    assert {key: found.get(key, [None])[0] for key in expected} == expected
    assert "@system-service" in found["SystemCallFilter"]
    # The daemon must be able to reach a Cloud anywhere.
    assert "IPAddressDeny" not in found


# Where systemd puts each *Directory= of a system unit, and its default mode.
UNIT_FOLDERS = {
    "RuntimeDirectory": "/run",
    "StateDirectory": "/var/lib",
    "CacheDirectory": "/var/cache",
    "LogsDirectory": "/var/log",
    "ConfigurationDirectory": "/etc",
}
DEFAULT_FOLDER_MODE = "0755"


def test_unit_and_tmpfiles_agree_on_every_folder_they_both_make() -> None:
    """Else systemd logs "already exists but the mode is different" at every start,
    and chowns a folder whose owner differs, which tmpfiles changes back at boot."""
    unit = directives(UNIT.read_text())
    owner = (unit["User"][0], unit["Group"][0])
    from_unit: dict[str, tuple[str, tuple[str, str] | None]] = {}
    for key, parent in UNIT_FOLDERS.items():
        mode = unit.get(f"{key}Mode", [DEFAULT_FOLDER_MODE])[-1]
        # systemd gives every folder to User=/Group= except the configuration
        # one, which it leaves to root and whose group only tmpfiles can set.
        enforced = None if key == "ConfigurationDirectory" else owner
        for name in " ".join(unit.get(key, [])).split():
            from_unit[f"{parent}/{name}"] = (mode, enforced)
    from_tmpfiles = {
        path: (mode, (user, group))
        for kind, path, mode, user, group, *_ in (
            line.split()
            for line in TMPFILES.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
        if kind == "d"
    }

    both = from_unit.keys() & from_tmpfiles.keys()
    assert both == {"/etc/hublink", "/var/lib/hublink"}
    for path in sorted(both):
        unit_mode, enforced = from_unit[path]
        tmpfiles_mode, tmpfiles_owner = from_tmpfiles[path]
        assert tmpfiles_mode == unit_mode, path
        assert tmpfiles_owner == (enforced or ("root", owner[1])), path


def test_sysusers_and_tmpfiles_create_the_user_and_folders(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [systemd_tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    assert "hublink" in passwd
    _, _, uid, gid, _, home, shell = passwd["hublink"]
    assert (home, shell) == ("/var/lib/hublink", "/usr/sbin/nologin")

    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles needs root to give the folders to hublink")
    subprocess.run(
        [systemd_tool("systemd-tmpfiles"), "--create", f"--root={tmp_path}", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    state = (tmp_path / "var/lib/hublink").stat()
    assert (state.st_mode & 0o777, state.st_uid, state.st_gid) == (0o700, int(uid), int(gid))
    config = (tmp_path / "etc/hublink").stat()
    assert (config.st_mode & 0o777, config.st_uid, config.st_gid) == (0o750, 0, int(gid))
