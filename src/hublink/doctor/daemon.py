"""The check of the running daemon: does ``hublink run`` answer on its socket, and how is it."""

from __future__ import annotations

import os

from hublink.config import Settings
from hublink.control import fetch_status
from hublink.doctor.check import Check, user_name
from hublink.logs import mask_text
from hublink.status import StatusReport


async def fetch_daemon(settings: Settings) -> StatusReport | None:
    """The running daemon's status over its control socket, or None when none answers."""
    return await fetch_status(settings.control_socket)


def daemon_check(settings: Settings, status: StatusReport | None) -> Check:
    """``daemon``: ``hublink run`` answers, and its link and tunnel are well."""
    socket_path = settings.control_socket
    if not isinstance(status, dict):
        if socket_path.exists() and not os.access(socket_path, os.R_OK | os.W_OK):
            return Check(
                "daemon",
                "fail",
                f"{socket_path} exists but {user_name(os.geteuid())} may not use it",
                "run as the hublink user, or add this user to group hublink",
            )
        return Check(
            "daemon",
            "fail",
            f"no daemon answers on {socket_path}",
            "systemctl start hublink; if it keeps stopping: journalctl -u hublink -n 50",
        )
    pid = (status.get("daemon") or {}).get("pid")
    link = status.get("websocket") or {}
    tunnel = status.get("tunnel") or {}
    pending = (status.get("outbox") or {}).get("pending")
    detail = (
        f"pid {pid}; link {link.get('state')}, tunnel {tunnel.get('state')}, "
        f"{pending} event(s) waiting"
    )
    last_errors = [
        f"{what}: {mask_text(str(error))}"
        for what, error in (("link", link.get("last_error")), ("tunnel", tunnel.get("last_error")))
        if error
    ]
    if last_errors:
        detail += "; last error " + "; ".join(last_errors)
    if link.get("state") == "unauthorized":
        return Check(
            "daemon",
            "fail",
            detail,
            "the Cloud refuses this hub: enroll again with hublink register --force",
        )
    if tunnel.get("state") == "failed":
        return Check("daemon", "fail", detail, "see the frpc check, and journalctl -u hublink")
    if link.get("state") != "connected" or tunnel.get("state") == "backoff":
        return Check("daemon", "warn", detail, "see the checks above and journalctl -u hublink")
    return Check("daemon", "pass", detail)
