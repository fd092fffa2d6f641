"""One task of the daemon, supervised: run it; if it crashes, log why and run it again later.

:func:`supervise` is what ``hublink run`` wraps each of its tasks in (the
uplink, the dispatcher, the watchdog, the credentials watch): a bug in one
task must never end the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from hublink.retry import Backoff, Jitter

log = structlog.get_logger(__name__)

#: A crashed task is restarted after this long, doubling up to the maximum.
RESTART_MIN = 1.0
RESTART_MAX = 30.0
#: A task that ran this long before crashing starts over from RESTART_MIN.
RESTART_STABLE = 60.0


async def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    restart_min: float = RESTART_MIN,
    restart_max: float = RESTART_MAX,
) -> None:
    """Run ``factory()``; if it crashes, log the traceback and run it again after a backoff.

    A normal return ends the supervision. Cancellation always goes through.
    """
    loop = asyncio.get_running_loop()
    # Every log line of this task (and of the tasks it starts) says which task it is.
    structlog.contextvars.bind_contextvars(task=name)
    # No jitter: a task restart is local, no neighbour competes for it.
    backoff = Backoff(restart_min, restart_max, Jitter.NONE)
    while True:
        started = loop.time()
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The one broad catch of the daemon: a bug in one task must not end the others.
            if loop.time() - started >= RESTART_STABLE:
                backoff.reset()
            delay = backoff.next()
            log.exception("task crashed; restarting it", task=name, retry_in=delay)
        else:
            log.debug("task finished", task=name)
            return
        await asyncio.sleep(delay)
