"""The reference Cloud: the Cloud side of the contract, for tests, the demo and the Cloud team.

    from hublink.devcloud import DevCloud

    cloud = DevCloud(tmp_path)   # or DevCloud(tmp_path, CloudOptions(offline_after=1))
    await cloud.start()          # http://127.0.0.1:<random port>
    ...
    await cloud.stop()

What it serves (``hublink devcloud`` runs it from the command line):

    POST /api/auth/login/            email + password -> RS256 access/refresh JWTs   (rest.py)
    POST /api/auth/refresh/          refresh -> a new pair
    GET  /api/auth/public-key/       the PEM that verifies the access tokens
    POST /api/hubs/register/         Bearer access; -> hub_id, slug, tunnel_port, tunnel_token
    POST /api/hubs/{id}/backups/     Bearer tunnel_token; streamed, SHA-256 checked (backups.py)
    GET  /ws/hub/{id}/?token=…       the hub's link (ws.py)
    /admin/hubs…                     look at hubs, push messages, revoke (admin.py)
    POST /frps/plugin/               frps's per-hub auth plugin, with ``frps_path`` (frps.py)

Hubs and backups are kept in SQLite under the data dir; what arrives over
the WebSockets is kept in memory. It is not a production server.
"""

from __future__ import annotations

from hublink.devcloud.records import HubRecord
from hublink.devcloud.server import DevCloud
from hublink.devcloud.state import DEMO_EMAIL, DEMO_PASSWORD, CloudOptions, CloudState
from hublink.devcloud.store import PortsExhaustedError, StoredBackup

__all__ = [
    "DEMO_EMAIL",
    "DEMO_PASSWORD",
    "CloudOptions",
    "CloudState",
    "DevCloud",
    "HubRecord",
    "PortsExhaustedError",
    "StoredBackup",
]
