"""The reference Cloud: the Cloud side of the contract, for tests, the demo and the Cloud team.

    from hublink.devcloud import DevCloud

    cloud = DevCloud(tmp_path)
    await cloud.start()          # http://127.0.0.1:<random port>
    ...
    await cloud.stop()

It is not a production server.
"""

from __future__ import annotations

from hublink.devcloud.cloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from hublink.devcloud.records import HubRecord
from hublink.devcloud.store import PortsExhaustedError, StoredBackup

__all__ = [
    "DEMO_EMAIL",
    "DEMO_PASSWORD",
    "DevCloud",
    "HubRecord",
    "PortsExhaustedError",
    "StoredBackup",
]
