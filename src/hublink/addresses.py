"""Addresses in the settings: loopback hosts and ``HOST:PORT`` listen addresses.

``is_loopback`` decides whether plain ``http://`` to the Cloud is allowed
(contract section 2); :func:`split_listen` is the one reader of a listen
address (``web.listen``, section 9; ``metrics.listen``, section 10), used by
the settings to check its shape, by the servers to bind it and by doctor to
try it.
"""

from __future__ import annotations

import ipaddress
import re


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost or a loopback address)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>[0-9]{1,5})")


def split_listen(value: str, *, any_port: bool = False) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` → ``("127.0.0.1", 9464)``; ``"[::1]:9464"`` → ``("::1", 9464)``.

    Port 0 (any free port, shown in ``status``) only with ``any_port``: the page
    allows it, ``metrics.listen`` does not (a scraper needs a known port).

    Raises:
        ValueError: not ``HOST:PORT`` with a port in range (the message says so).
    """
    match = _LISTEN.fullmatch(value.strip())
    if match is None or (match["host"].startswith("[") and not _is_ipv6(match["host"][1:-1])):
        raise ValueError(
            f'{value!r} is not HOST:PORT; write it like "127.0.0.1:9464" or "[::1]:9464"'
        )
    port, lowest = int(match["port"]), 0 if any_port else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be between {lowest} and 65535, not {port}")
    return match["host"].strip("[]"), port


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
