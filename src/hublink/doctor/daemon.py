"""The checks of the running daemon: does ``hublink run`` answer on its socket, and how is
it; is its local page served (or, with no daemon, could it be)."""

from __future__ import annotations

import asyncio
import os
import socket

from hublink.addresses import split_listen
from hublink.config import Settings
from hublink.control import fetch_status
from hublink.doctor.check import Check, os_reason, user_name
from hublink.logs import mask_text
from hublink.statusreport import StatusReport


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


async def page_check(settings: Settings, status: StatusReport | None) -> Check:
    """``page``: the daemon serves the local page on ``web.listen`` (contract section 9); with
    no daemon, whether it could bind that address."""
    web = settings.web
    if not web.enabled:
        return Check("page", "skip", "web.enabled = false: the local page is off")
    if isinstance(status, dict):
        report = status.get("web")
        if not report:
            return Check("page", "skip", "the running daemon does not report a page (older)")
        if report.get("error"):
            return Check(
                "page",
                "fail",
                f"the daemon does not serve the page: {report['error']}",
                "free that port or change web.listen, then systemctl restart hublink",
            )
        if report.get("url"):
            return Check(
                "page",
                "pass",
                f"served at {report['url']}; as root or hublink, `hublink status` shows "
                "its URL with the setup code",
            )
    problem = await asyncio.to_thread(_bind_problem, web.listen)
    if problem is not None:
        return Check(
            "page",
            "fail",
            f"web.listen {web.listen} cannot be bound: {problem}",
            "another program may use the port, or the address is not on this box; "
            "change web.listen",
        )
    return Check("page", "pass", f"web.listen {web.listen} is free for the daemon's page")


def _bind_problem(listen: str) -> str | None:
    """Why ``listen`` cannot be bound right now, or None when it can."""
    host, port = split_listen(listen, any_port=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            return None
    except OSError as err:
        return os_reason(err)
