"""The frp tunnel that lets the Cloud reach the Hub application (contract section 3).

config      frpc.toml: built, written 0600, shown masked
supervisor  the one frpc child: started, health-checked, restarted with backoff, reaped

The names below load their module when first used (:mod:`hublink._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hublink._lazy import lazy_exports

if TYPE_CHECKING:
    from hublink.tunnel.config import masked_config, write_config
    from hublink.tunnel.supervisor import TunnelSupervisor, resolve_frpc

_EXPORTS = {
    "masked_config": "config",
    "write_config": "config",
    "TunnelSupervisor": "supervisor",
    "resolve_frpc": "supervisor",
}
__all__ = ["TunnelSupervisor", "masked_config", "resolve_frpc", "write_config"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
