"""The checks of the tunnel: frpc itself, the frps port, and the Hub application's port."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from hublink.config import Settings
from hublink.doctor.check import Check, Status, os_reason
from hublink.tunnel.supervisor import resolve_frpc

#: frp's TOML config (what hublink writes) arrived in 0.52.
MIN_FRPC_VERSION = (0, 52, 0)

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


async def frpc_check(settings: Settings, patience: float) -> Check:
    """``frpc``: found as the tunnel finds it, executable, 0.52 or later (``patience`` in s)."""
    if not settings.tunnel.enabled:
        return Check("frpc", "skip", "tunnel.enabled = false")
    found = resolve_frpc(settings.tunnel.frpc_path)
    if found is None:
        return _frpc_missing(settings.tunnel.frpc_path)
    version = await _frpc_version(found, patience)
    if version is None:
        return Check(
            "frpc",
            "warn",
            f"{found} did not report a version",
            f"check that {found} really is frpc: {found} --version",
        )
    shown = ".".join(str(part) for part in version)
    if version < MIN_FRPC_VERSION:
        return Check(
            "frpc",
            "fail",
            f"{found} is frp {shown}; hublink needs 0.52 or later (TOML config)",
            "upgrade frp from https://github.com/fatedier/frp/releases",
        )
    return Check("frpc", "pass", f"{found}, frp {shown}")


def _frpc_missing(configured: str) -> Check:
    if "/" in configured and Path(configured).is_file():
        return Check("frpc", "fail", f"{configured} is not executable", f"chmod 755 {configured}")
    return Check(
        "frpc",
        "fail",
        f"{configured} not found" + ("" if "/" in configured else " on PATH"),
        "install frp 0.52 or later (frpc), or set tunnel.frpc_path",
    )


async def _frpc_version(path: str, patience: float) -> tuple[int, int, int] | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError:
        return None
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), patience)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    match = _VERSION.search(output.decode(errors="replace"))
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


async def frps_check(settings: Settings, patience: float) -> Check:
    """``frps``: the tunnel server's port accepts TCP within ``patience`` seconds."""
    if not settings.tunnel.enabled:
        return Check("frps", "skip", "tunnel.enabled = false")
    host, port = settings.frps_addr, settings.tunnel.server_port
    error = await _tcp_connect(host, port, patience)
    if error:
        return Check(
            "frps",
            "fail",
            f"{host}:{port} does not accept connections: {error}",
            "check tunnel.server_addr/server_port, and that outbound TCP to it is allowed",
        )
    return Check("frps", "pass", f"{host}:{port} accepts connections")


async def local_port_check(settings: Settings, patience: float) -> Check:
    """``local_port``: the Hub application listens on ``hub.local_port``."""
    port = settings.hub.local_port
    error = await _tcp_connect("127.0.0.1", port, patience)
    if error:
        verdict: Status = "fail" if settings.tunnel.enabled else "warn"
        return Check(
            "local_port",
            verdict,
            f"nothing listens on 127.0.0.1:{port} ({error}); the tunnel would expose nothing",
            "start the Hub application, or set hub.local_port to its port",
        )
    return Check("local_port", "pass", f"the Hub application listens on 127.0.0.1:{port}")


async def _tcp_connect(host: str, port: int, patience: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), patience)
    except TimeoutError:
        return "timed out"
    except OSError as err:
        return os_reason(err)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
