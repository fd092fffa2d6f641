"""How tests wait for what another task or process will do: poll with a deadline, never sleep.

Synchronous tests call ``asyncio.run(wait_until(...))``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from support.timing import scaled

#: Seconds between two looks at the predicate.
POLL = 0.02


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "", poll: float = POLL
) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value.

    ``predicate`` may be a plain function or return an awaitable (an async
    function, ``asyncio.to_thread``); exceptions it raises end the wait.
    ``timeout`` is in seconds as the test chose it, stretched by
    :data:`support.timing.TIME_FACTOR`.

    Raises:
        TimeoutError: the (scaled) timeout passed first; the message names ``what``.
    """
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {limit:g} s for {what or predicate}, in vain")
        await asyncio.sleep(poll)
