"""Durability: the daemon SIGKILLed at random moments while the Hub keeps queuing.

The Hub application queues events the way ``hublink send`` does (durably into
the outbox, then a poke), so it keeps going while no daemon runs. The daemon is
killed without warning at random moments of its life (starting, linking,
draining) and started again at once. Contract: once queued, an event survives a
``kill -9`` and leaves in order (section 2, the outbox); delivery is
at-least-once, so duplicates are counted, not forbidden; none may be lost.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest

from hublink.devcloud import DevCloud
from support.daemon import Daemons
from support.reliability import Row
from support.scenario import Producer, fault_hub, sized

pytestmark = [pytest.mark.faults, pytest.mark.timeout(sized(120, 600))]

#: When each kill comes, in seconds after the daemon was started: from mid-start-up to
#: well into draining (a daemon links in about a second on a quiet box).
KILL_WINDOW = (0.1, 3.0)
#: Replays a run (its seed is in the figure). Read at import: the tests' autouse fixture
#: removes every HUBLINK_* variable before each test.
SEED = os.environ.get("HUBLINK_FAULTS_SEED")


async def test_sigkill_at_random_moments_loses_nothing_and_keeps_the_order(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons, recorder: Any
) -> None:
    seed = int(SEED) if SEED else random.randrange(1 << 30)
    rng = random.Random(seed)
    hub = fault_hub(devcloud, tmp_path / "hub")
    kills = sized(6, 30)
    moments: list[float] = []
    async with Producer(hub, interval=0.01, via="send") as events:
        for _ in range(kills):
            daemon = await daemons.start(hub)
            moment = rng.uniform(*KILL_WINDOW)
            moments.append(moment)
            # The kill's moment is the scenario itself, drawn at random; nothing to wait for.
            await asyncio.sleep(moment)
            await daemon.kill()
        survivor = await daemons.start(hub)
        await survivor.wait_status(lambda s: s["websocket"]["state"] == "connected", timeout=30)
        queued_at_end = len(events.accepted)
        await survivor.wait_status(lambda s: len(events.accepted) >= queued_at_end + 20)
    missing = await events.settle(timeout=60)
    await survivor.wait_status(lambda s: s["outbox"]["pending"] == 0, timeout=60)
    queued = len(events.accepted)
    duplicates = events.duplicates()
    in_order = events.in_order()
    row = Row(
        key="durability/1-sigkill",
        scenario=f"SIGKILL at {kills} random moments (0.1 to 3 s after each start) while the "
        "Hub queues",
        rule="§2/§4: a queued event survives kill -9 and leaves in order; at-least-once",
        iterations=kills,
        figure=f"{queued} events queued, {queued - len(missing)} arrived, {len(missing)} lost, "
        f"{duplicates} duplicates ({100 * duplicates / max(queued, 1):.1f} %), "
        f"{'in order' if in_order else 'OUT OF ORDER'}; seed {seed}",
        goal="0 lost, in order; duplicates allowed",
        passed=not missing and in_order,
        data={"seed": seed, "moments": moments, "queued": queued, "duplicates": duplicates},
    )
    recorder(row)
    assert not missing, f"{len(missing)} lost (seed {seed})"
    assert in_order, f"seed {seed}"
