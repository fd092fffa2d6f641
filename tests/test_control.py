"""The control API's client (contract section 8) when no daemon answers.

The API against a real daemon is in tests/contract/test_s08_control_api.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

from hublink.control import fetch_status, poke


async def test_the_client_treats_no_daemon_as_an_answer(tmp_path: Path) -> None:
    missing = tmp_path / "run" / "control.sock"
    assert await fetch_status(missing) is None
    assert poke(missing) is False
    # A socket file nobody listens on (a crashed daemon's) is no daemon either.
    missing.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(missing))
    assert await fetch_status(missing) is None
    assert poke(missing) is False
