"""Free loopback ports for the reference Cloud, its frps, the demo, the tests and the benches."""

from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free loopback ports, as ``(low, high)``: a Cloud's tunnel ports.

    Raises:
        RuntimeError: no such range was found in 200 tries.
    """
    for _ in range(200):
        low = free_port()
        if low + size > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(low, low + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low, low + size - 1
    raise RuntimeError("no range of free ports found")
