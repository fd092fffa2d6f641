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
