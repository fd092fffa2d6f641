"""A small filesystem that a test can fill to the last byte: a tmpfs, mounted as root.

with SmallFilesystem(tmp_path / "state", size="4m") as fs:
    ...                    # hublink's state dir lives here
    fs.fill()              # no byte left: every write gets ENOSPC
    fs.free()              # room again
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from types import TracebackType

import pytest

FILLER = ".filler"
CHUNKS = (1024 * 1024, 4096, 1)


def need_root() -> None:
    """Skip the test, saying why, unless it runs as root (mounting a tmpfs needs it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the state dir needs root")


class SmallFilesystem:
    """A tmpfs of ``size`` (``mount -o size=…``) mounted on ``path`` for the block."""

    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        self.size = size
        self.filler = path / FILLER

    def __enter__(self) -> SmallFilesystem:
        need_root()
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Lazy: a daemon that still holds a file must not keep the mount (or the test) alive.
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self) -> int:
        """Write a filler file until the filesystem refuses a single byte; its size."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in CHUNKS:
                block = b"\0" * chunk
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return self.filler.stat().st_size

    def free(self) -> None:
        """Remove the filler: room again."""
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def available(self) -> int:
        """Bytes free for an ordinary user."""
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize
