"""Addresses in the settings: loopback hosts and ``HOST:PORT`` listen addresses.

``is_loopback`` decides whether plain ``http://`` to the Cloud is allowed
(contract section 2); :func:`parse_listen` is the one reader of a listen
address (``web.listen``, contract section 9), used by the settings to check
its shape, by the page to bind it and by doctor to try it.
"""

from __future__ import annotations

import ipaddress

from hublink.errors import WebListenError


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost or a loopback address)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port (0: any free port).

    Raises:
        WebListenError: not of that shape.
    """
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = _is_ipv6(host)
    else:
        valid_host = ":" not in host and not any(c.isspace() for c in host)
    if (
        not sep
        or not host
        or not valid_host
        or not port_text.isascii()
        or not port_text.isdigit()
        or int(port_text) > 65535
    ):
        raise WebListenError(
            f"web.listen {listen!r} is not HOST:PORT",
            hint="for example 127.0.0.1:8002, or [::1]:8002 for IPv6",
        )
    return host, int(port_text)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
