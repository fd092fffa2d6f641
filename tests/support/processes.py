"""Processes seen from outside: alive or not, what ``/proc`` shows, scripts a test runs."""

from __future__ import annotations

from pathlib import Path


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead: it runs nothing any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def find_processes_with(marker: str, argv: list[str]) -> list[int]:
    """Live processes whose command line is ``argv`` and whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")[:-1]
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        ours = [part.decode() for part in cmdline] == argv and marker.encode() in environ
        if ours and is_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def read_proc_file(pid: int, name: str) -> bytes:
    """``/proc/PID/name`` (cmdline, environ) as bytes."""
    return Path(f"/proc/{pid}/{name}").read_bytes()


def write_executable(folder: Path, name: str, body: str) -> Path:
    """An executable file ``folder/name`` holding ``body`` (with its own ``#!`` line); its path."""
    path = folder / name
    path.write_text(body)
    path.chmod(0o755)
    return path


def write_hook(folder: Path, name: str, body: str) -> Path:
    """A ``/bin/sh`` hook script ``folder/name`` running ``body``; its path."""
    return write_executable(folder, name, "#!/bin/sh\n" + body)
