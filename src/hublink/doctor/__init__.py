"""``hublink doctor``: the troubleshooting steps as checks (see :mod:`hublink.doctor.runner`).

runner  the report, running every check, its text form
check   one check's verdict and the helpers the families share
local   config, credentials, state_dir, runtime_dir, disk_space, backup_database
cloud   cloud, tls, clock, websocket (through the link's own handshake)
tunnel  frpc (found as the tunnel finds it), frps, local_port
daemon  the running daemon, over its control socket
"""

from __future__ import annotations

from hublink.doctor.check import Check, Status
from hublink.doctor.runner import DEFAULT_TIMEOUT, Report, config_report, render, run_checks

__all__ = ["DEFAULT_TIMEOUT", "Check", "Report", "Status", "config_report", "render", "run_checks"]
