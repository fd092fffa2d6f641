"""Where a Cloud→Hub flood's time goes: each step of the daemon's receive path, per message.

The flood's figure (bench_commands) is the whole path; this times its steps one
by one, in this process, on the real functions with the daemon's logging set up
as ``hublink run`` sets it up: best of 7 repeats, in microseconds. ``json.loads``
is what the bare loop does as well; the rest is what hublink adds to it.

Run it alone (``.venv/bin/python bench/receive_steps.py``: a table, or ``--json``);
``make bench`` prints it under the table (bench_commands.markdown).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Messages per repeat.
NUMBER = 20_000
#: Repeats; the best is kept (the others waited on the rest of the box).
REPEATS = 7


def best(step: Callable[[], Any]) -> float:
    """The best repeat's time per call, in microseconds."""
    return min(timeit.repeat(step, number=NUMBER, repeat=REPEATS)) / NUMBER * 1e6


async def record_costs(messages: list[Any]) -> tuple[float, float]:
    """(µs on the loop, µs in the writer thread) per ``record_plugin_update``, best of 5."""
    from hublink.link.notices import StateStore

    on_loop, in_writer = [], []
    for _ in range(5):
        with tempfile.TemporaryDirectory() as folder:
            store = StateStore.load(Path(folder))
            started = time.perf_counter()
            for message in messages:
                store.record_plugin_update(message)
            on_loop.append((time.perf_counter() - started) / len(messages) * 1e6)
            started = time.perf_counter()
            await store.aclose()  # writes everything still pending, in one transaction
            in_writer.append((time.perf_counter() - started) / len(messages) * 1e6)
    return min(on_loop), min(in_writer)


def steps() -> list[tuple[str, float]]:
    """(step, µs per message), in the order the daemon takes them."""
    from hublink import logs

    logs.configure("info", "journal", io.StringIO(), daemon=True)
    import structlog
    from bench_commands import frame

    from hublink.link.messages import INBOUND_TYPES, parse_inbound
    from hublink.link.records import now
    from hublink.live import LiveState
    from hublink.metrics import Metrics

    text = frame(1, "steps")
    message = parse_inbound(text)
    metrics = Metrics(live=LiveState(), inbound_types=INBOUND_TYPES)
    log = structlog.get_logger("hublink.link.dispatch")
    on_loop, in_writer = asyncio.run(
        record_costs([parse_inbound(frame(n, "steps")) for n in range(NUMBER)])
    )
    return [
        ("`json.loads` of the frame (the bare loop does it too)", best(lambda: json.loads(text))),
        (
            "`parse_inbound`: `json.loads` and pydantic's validation",
            best(lambda: parse_inbound(text)),
        ),
        ("`metrics.frame_received`", best(lambda: metrics.frame_received(message.type))),
        ("`record_plugin_update` on the loop", on_loop),
        ("… of which the record's timestamp (`records.now`)", best(now)),
        ("… its write, in the state store's writer thread", in_writer),
        (
            "the handler's `log.info`, past the line budget",
            best(lambda: log.info("plugin update available", plugin_id=message.plugin_id)),
        ),
    ]


def markdown(measured: list[tuple[str, float]]) -> str:
    """The section of BENCHMARKS.md."""
    lines = [
        "## Where a flood's time goes",
        "",
        "Each step of the daemon's receive path on its own (bench/receive_steps.py), per "
        f"message, best of {REPEATS} repeats of {NUMBER:,}:",
        "",
        "| step | µs |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in measured]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Print the steps (``--json``: as a JSON list of [step, µs])."""
    measured = steps()
    if "--json" in sys.argv[1:]:
        print(json.dumps(measured))
    else:
        print(markdown(measured))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
