"""A real, small file system for disk-full tests: a tmpfs mounted on a test folder.

    with small_filesystem(folder, size="8m"):    # needs root; skips the test otherwise
        fill(folder)                             # no byte left
        ...
        filler.unlink()                          # room again

tmpfs enforces its size like any disk: SQLite, the backup and atomic writes
see ENOSPC ("database or disk is full") exactly as on a full SD card.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = ".filler"


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str = "8m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``folder`` (created 0700) for the block.

    Skips the test when not root or when mounting is not allowed here.
    """
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real small file system needs root (mount -t tmpfs)")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a filler file in ``folder`` until its file system has no byte left; the file."""
    filler = folder / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler
