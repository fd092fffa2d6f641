"""The fault suite's fixtures: a hub whose link runs through a fault proxy, and the recorder.

Every test here is marked ``faults``; CI runs the short forms, ``make faults``
the full ones (``HUBLINK_FAULTS_FULL=1``) and writes RELIABILITY.md from what
each test recorded through the ``record`` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hublink.devcloud import DevCloud
from support.cloud import HubEnv
from support.faultproxy import FaultProxy
from support.reliability import Row, record
from support.scenario import fault_hub


@pytest.fixture
def recorder() -> Callable[[Row], None]:
    """Save a scenario's row for RELIABILITY.md (``recorder(Row(...))``)."""

    def save(row: Row) -> None:
        record(row)

    return save


@pytest.fixture
async def proxy(devcloud: DevCloud) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the reference Cloud."""
    relay = await FaultProxy(devcloud.port).start()
    try:
        yield relay
    finally:
        await relay.close()


@pytest.fixture
def proxied_hub(devcloud: DevCloud, proxy: FaultProxy, tmp_path: Path) -> HubEnv:
    """A hub whose link goes through ``proxy``."""
    return fault_hub(devcloud, tmp_path / "hub", proxy.url)
