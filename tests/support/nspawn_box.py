"""A throwaway systemd machine for the unit tests: this host's own /usr, booted by systemd-nspawn.

    with staged_install(stage) as stage_dir, booted(stage_dir) as box:
        box.run(["systemctl", "start", "hublink"])

Why these nspawn options:

- ``-D / --volatile=yes``: the host's /usr (its systemd 252, Python, util-linux)
  under a tmpfs root, so /etc and /var start empty, like a fresh box, and
  nothing written inside reaches the host.
- ``--overlay=/usr::/usr``: the README installs into /usr (``/usr/bin/hublink``,
  ``/usr/lib/sysusers.d``); a volatile /usr is read-only, so writes go to a
  temporary upper folder that nspawn deletes when the container ends.
- ``--private-network``: only a loopback; the reference Cloud, frps, frpc and
  the Hub application all meet there, and no port can clash with the host's.
- ``--register=no --keep-unit``: this host has no systemd-machined (nor a
  systemd PID 1), so commands go in with ``nsenter`` instead of ``machinectl``.
- ``systemd.unit=basic.target``: with an empty /etc, systemd presets every
  unit installed on the host as enabled; multi-user.target would start them
  all (and log their failures). basic.target is what hublink needs.
- ``systemd.mask=systemd-firstboot.service``: an empty /etc counts as a first
  boot, and systemd-firstboot fails without a console (``systemd.firstboot=off``
  only stops its prompts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from support.polling import wait_until
from support.timing import scaled

ROOT = Path(__file__).resolve().parents[2]
#: Where the stage folder appears inside the container (read-only).
STAGE = "/mnt/hublink-stage"
#: Debian's own Python: the README installs hublink into a venv made with it.
SYSTEM_PYTHON = "/usr/bin/python3"
#: The environment of every command run inside: nothing from the test's own.
INSIDE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
BOOT_TIMEOUT = 30.0
HALT_TIMEOUT = 15.0

T = TypeVar("T")


class BoxError(AssertionError):
    """A command inside failed, or a wait ran out; the message says what and shows the output."""


def wait_in_box(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    why: Callable[[], str],
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    :func:`support.polling.wait_until`, for these synchronous tests.

    Raises:
        BoxError: ``timeout`` (scaled) seconds passed first; the message names
            ``what`` and adds ``why()`` (a journal tail, say).
    """
    try:
        found: T = asyncio.run(wait_until(predicate, timeout, what, poll=0.1))
    except TimeoutError:
        raise BoxError(f"waited {scaled(timeout):g} s for {what}, in vain\n{why()}") from None
    return found


# --- on the host: what the container installs -------------------------------


def _pip(*args: str, offline: bool) -> subprocess.CompletedProcess[str]:
    extra = ["--no-index"] if offline else []
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, *extra, "--disable-pip-version-check", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )


def fill_wheelhouse(wheelhouse: Path, requirements: Sequence[str], python_version: str) -> None:
    """Make ``wheelhouse`` hold wheels for ``requirements`` and everything they need.

    The container has no network, so everything it installs comes from here.
    The folder is a cache kept across runs: first an offline check against it
    alone, and only when that fails a download (the one step that needs the
    package index). Wheels only, for Debian's Python version: the container
    has no compiler and a different interpreter than this venv.
    """
    wheelhouse.mkdir(parents=True, exist_ok=True)
    common = [
        "download",
        "--dest",
        str(wheelhouse),
        "--find-links",
        str(wheelhouse),
        "--only-binary=:all:",
        "--python-version",
        python_version,
        *requirements,
    ]
    if _pip(*common, offline=True).returncode == 0:
        return
    online = _pip(*common, offline=False)
    if online.returncode != 0:
        raise BoxError(
            f"cannot fill the wheelhouse {wheelhouse} with {list(requirements)}:\n{online.stderr}"
        )


def build_wheel(out_dir: Path, wheelhouse: Path, scratch: Path) -> Path:
    """Build hublink's wheel from a copy of this source tree; its path.

    A copy, because setuptools leaves ``build/`` and ``*.egg-info`` behind, and a
    stale ``build/lib`` would put modules deleted since then into the wheel.
    The isolated build environment comes from the wheelhouse, so that a warm
    cache builds without the package index.
    """
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    fill_wheelhouse(wheelhouse, build_requires, version)
    source = scratch / "src-copy"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out_dir), str(source)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise BoxError(f"building the wheel failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wheels = sorted(out_dir.glob("hublink-*.whl"))
    assert len(wheels) == 1, f"expected one hublink wheel in {out_dir}, found {wheels}"
    return wheels[0]


def find_system_python_version() -> str:
    """``X.Y`` of Debian's Python, which the container's venv uses."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# --- the container ------------------------------------------------------------


@dataclass
class Box:
    """A booted container and the way in: ``nsenter`` into its namespaces."""

    nspawn: subprocess.Popen[bytes]
    leader: int
    console: Path
    upper_dirs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, as root or as ``user`` (with that user's groups).

        ``setpriv`` rather than sudo or runuser: a fresh /etc has no PAM
        configuration, and sudo is not installed on a Hub box by hublink.
        """
        inner = list(argv)
        if user is not None:
            inner = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *inner]
        cmd = ["nsenter", f"--target={self.leader}", "--all", "--", *inner]
        done = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=INSIDE_ENV,
            cwd="/",
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise BoxError(
                f"inside the container, {' '.join(inner)} exited {done.returncode}\n"
                f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
            )
        return done

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside (``set -eu``)."""
        return self.run(["/bin/sh", "-euc", script], **kwargs)

    def write(self, path: str, text: str, mode: str = "0644", group: str = "root") -> None:
        """Write a file inside, atomically enough for config files nobody reads yet."""
        self.run(["install", "-D", "-m", mode, "-g", group, "/dev/stdin", path], input=text)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` of ``props``, as a dict."""
        done = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)])
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def journal(self, *args: str, lines: int = 40) -> str:
        """The last ``lines`` of the journal (``args`` filter it: ``-u hublink``), for messages."""
        done = self.run(
            ["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines), *args],
            check=False,
        )
        return done.stdout

    def journal_json(self, *args: str) -> list[dict[str, Any]]:
        """Every journal entry of this boot that ``args`` select, as dicts."""
        done = self.run(["journalctl", "--no-pager", "-b", "-o", "json", *args])
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def http(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """An HTTP request made inside (the Cloud is on the container's loopback)."""
        script = """
import json, sys, urllib.error, urllib.request
method, url, body = json.loads(sys.stdin.read())
data = None if body is None else json.dumps(body).encode()
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        status, text = resp.status, resp.read().decode()
except urllib.error.HTTPError as err:
    status, text = err.code, err.read().decode()
print(json.dumps([status, text]))
"""
        done = self.run([SYSTEM_PYTHON, "-c", script], input=json.dumps([method, url, body]))
        status, text = json.loads(done.stdout)
        try:
            return int(status), json.loads(text)
        except ValueError:
            return int(status), text

    def pids_of(self, comm: str) -> list[int]:
        """Pids inside whose command name is ``comm`` (the container's own pid namespace)."""
        done = self.run(["pgrep", "-x", comm], check=False)
        return [int(pid) for pid in done.stdout.split()]

    def console_tail(self, lines: int = 30) -> str:
        """The end of nspawn's own output."""
        with contextlib.suppress(OSError):
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _find_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def make_nspawn_command(stage_dir: Path, machine: str) -> list[str]:
    """The systemd-nspawn command line (see the module's docstring for why each option)."""
    return [
        "systemd-nspawn",
        "--quiet",
        "--directory=/",
        "--volatile=yes",
        "--overlay=/usr::/usr",
        "--private-network",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={machine}",
        "--console=pipe",
        f"--bind-ro={stage_dir}:{STAGE}",
        # what follows goes to the container's systemd, like a kernel command line
        "systemd.firstboot=off",
        "systemd.mask=systemd-firstboot.service",
        "systemd.mask=systemd-networkd-wait-online.service",
        "systemd.unit=basic.target",
    ]


def find_own_cgroups(name: str) -> list[Path]:
    """New cgroups ``name`` below this process's own, one per hierarchy systemd uses.

    With ``--keep-unit`` and no machined, nspawn puts the container in its
    caller's cgroup (under ``payload/``). Two containers booted from the same
    cgroup, as two test runs on one box would be, then share every unit's
    cgroup: one container's ``systemctl stop`` waits for the other's processes.
    The cgroup v2 tree, and on a hybrid or v1 host the ``name=systemd`` one.
    """
    mounts: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fstype, _source, options = after.split()[:3]
        if fstype == "cgroup2":
            mounts.setdefault("", before.split()[4])
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("name=systemd", before.split()[4])
    made = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, hierarchy, path = line.split(":", 2)
        if hierarchy in mounts:
            folder = Path(mounts[hierarchy]) / path.lstrip("/") / name
            folder.mkdir()
            made.append(folder)
    return made


def remove_cgroups(folders: Sequence[Path]) -> None:
    """rmdir each cgroup and what nspawn made below it (empty once the container is gone)."""
    for top in folders:
        for below, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                Path(below).rmdir()


# Joins the cgroups named before "--" (in their cgroup.procs), then becomes nspawn.
JOIN_THEN_EXEC = (
    'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec "$@"'
)


@contextlib.contextmanager
def booted(stage_dir: Path, console: Path) -> Iterator[Box]:
    """Boot the container; halt it (or kill it) on the way out, whatever happened."""
    started = time.monotonic()
    name = f"unitboot-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    cgroups = find_own_cgroups(name)
    try:
        with _booted(stage_dir, console, name, cgroups, started) as box:
            yield box
    finally:
        remove_cgroups(cgroups)


@contextlib.contextmanager
def _booted(
    stage_dir: Path, console: Path, name: str, cgroups: Sequence[Path], started: float
) -> Iterator[Box]:
    join = ["/bin/sh", "-c", JOIN_THEN_EXEC, "sh", *map(str, cgroups), "--"]
    with console.open("wb") as out:
        nspawn = subprocess.Popen(
            [*join, *make_nspawn_command(stage_dir, name)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # its own process group: the teardown can kill nspawn and all it started
            start_new_session=True,
        )
    box: Box | None = None
    try:

        def leader() -> int | None:
            if nspawn.poll() is not None:
                raise BoxError(f"systemd-nspawn exited {nspawn.returncode}:\n{console.read_text()}")
            kids = _find_children(nspawn.pid)
            return kids[0] if kids else None

        pid = wait_in_box(leader, BOOT_TIMEOUT, "systemd-nspawn's container", lambda: "")
        box = Box(nspawn=nspawn, leader=pid, console=console)

        def booted_state() -> str | None:
            done = box.run(["systemctl", "is-system-running"], check=False, timeout=10)
            state = done.stdout.strip()
            return state if state in ("running", "degraded") else None

        state = wait_in_box(booted_state, BOOT_TIMEOUT, "the container's boot", box.console_tail)
        if state == "degraded":
            failed = box.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise BoxError(f"the container booted degraded:\n{failed}\n{box.journal('-b')}")
        # the overlay's upper folder on the host, to remove should nspawn be killed
        mounts = box.run(["findmnt", "--noheadings", "--output=OPTIONS", "/usr"]).stdout
        for option in mounts.replace("\n", ",").split(","):
            if option.startswith("upperdir="):
                box.upper_dirs.append(Path(option.removeprefix("upperdir=")).parent)
        box.timings["boot"] = time.monotonic() - started
        yield box
    finally:
        _halt(nspawn, box)


def _halt(nspawn: subprocess.Popen[bytes], box: Box | None) -> None:
    """SIGTERM makes nspawn halt the container cleanly; SIGKILL to the group if that hangs."""
    if nspawn.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=HALT_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(nspawn.pid, signal.SIGKILL)
            nspawn.wait(timeout=HALT_TIMEOUT)
    if box is not None:
        for upper in box.upper_dirs:
            # nspawn removes it on a clean exit; this is for the killed case
            shutil.rmtree(upper, ignore_errors=True)
