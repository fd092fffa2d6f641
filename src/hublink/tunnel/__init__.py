"""The frp tunnel that lets the Cloud reach the Hub application (contract section 3).

config      frpc.toml: built, written 0600, shown masked
supervisor  the one frpc child: started, health-checked, restarted with backoff, reaped

The names below load their module when first used (:mod:`hublink._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hublink._lazy import lazy_exports

if TYPE_CHECKING:
    from hublink.tunnel.config import masked_config as masked_config
    from hublink.tunnel.config import write_config as write_config
    from hublink.tunnel.supervisor import TunnelSupervisor as TunnelSupervisor
    from hublink.tunnel.supervisor import resolve_frpc as resolve_frpc

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ["masked_config", "write_config"],
        "supervisor": ["TunnelSupervisor", "resolve_frpc"],
    },
)
