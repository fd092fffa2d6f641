"""Hub boxes in the shapes the page and the control API tests start from."""

from __future__ import annotations

from typing import Any

from hublink.devcloud import DevCloud
from support.cloud import HubEnv, make_hub_env


def unregistered_hub(cloud: DevCloud, base: Any, **overrides: Any) -> HubEnv:
    """A box with hublink's settings for ``cloud`` but no credentials yet (fresh install).

    The returned ``creds`` belong to a hub made only to build the environment;
    the box does not hold them.
    """
    hub = make_hub_env(cloud, base, **overrides)
    hub.settings.credentials_path.unlink()
    return hub


def connected(status: dict[str, Any]) -> bool:
    """Whether a status object says the hub is registered and its link is up."""
    return bool(status["registered"] and status["websocket"]["state"] == "connected")


def running(status: dict[str, Any]) -> bool:
    """Whether a status object comes from a running daemon."""
    return bool(status["daemon"]["running"])
