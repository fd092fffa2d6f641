"""Lazy imports that the cold start and the idle footprint depend on."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return out.splitlines()[-1].split()[1:]


def test_version_loads_no_heavy_library() -> None:
    heavy = ("pydantic", "aiohttp", "structlog", "websockets", "jwt", "pyrage", "zstandard")
    code = "from hublink.cli import main\nmain(['--version'])"
    assert loaded_after(code, heavy) == []


def test_the_daemon_does_not_carry_the_enrollment_and_backup_libraries() -> None:
    # pyrage and zstandard load at the first backup request.
    code = "import hublink.daemon, hublink.link.connection, hublink.tls, hublink.control"
    assert loaded_after(code, ("jwt", "cryptography", "pyrage", "zstandard")) == []


def test_the_rest_client_loads_jwt_only_to_verify_a_token() -> None:
    # The daemon's backup uploads use the REST client; pyjwt and cryptography
    # (about 8 MiB) are for checking the owner's token at registration only.
    code = "import hublink.cloud.client"
    assert loaded_after(code, ("jwt", "cryptography")) == []
