"""The control socket's file: ``{runtime_dir}/control.sock``, mode 0660 from its first instant.

A socket left behind by a crashed daemon is replaced; one that still answers
means another daemon runs, and this one refuses to start.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import structlog

from hublink.control.client import CLIENT_TIMEOUT
from hublink.errors import DaemonRunningError, HublinkError
from hublink.fsutil import make_dirs

log = structlog.get_logger(__name__)

SOCKET_MODE = 0o660
RUNTIME_DIR_MODE = 0o750


def prepare_socket_path(path: Path) -> None:
    """Create the runtime dir; clear a stale socket; refuse when a daemon answers.

    Raises:
        HublinkError: the runtime directory cannot be created.
        DaemonRunningError: a live daemon answers on ``path``.
    """
    try:
        make_dirs(path.parent, RUNTIME_DIR_MODE)
    except OSError as err:
        raise HublinkError(
            f"cannot create the runtime directory {path.parent}: {err.strerror or err}",
            hint="create it for the hublink user (systemd: RuntimeDirectory=hublink)",
        ) from None
    if not (path.exists() or path.is_symlink()):
        return
    if _answers(path):
        raise DaemonRunningError(
            f"another hublink daemon is running (it answers on {path})",
            hint="stop it first (systemctl stop hublink); two daemons must not run at once",
        )
    log.info("removing a stale control socket left by an earlier run", path=str(path))
    path.unlink()


def bind_socket(path: Path) -> socket.socket:
    """A unix socket bound at ``path`` that never exists there with a mode other than 0660.

    ``bind`` creates the socket file with the umask's mode (0777 under umask
    000), so it is bound in a private (0700) folder beside ``path``, set to
    0660, and only then renamed into place. The folder's name is as long as
    ``control.sock``: a path that fits the 108-byte limit still fits.
    """
    staging = Path(tempfile.mkdtemp(prefix=".c", dir=path.parent))
    staged = staging / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staged))
        staged.chmod(SOCKET_MODE)
        staged.replace(path)
    except BaseException:
        sock.close()
        raise
    finally:
        staged.unlink(missing_ok=True)
        staging.rmdir()
    return sock


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
