"""Waiting for what another task or process will do: poll with a deadline, never a fixed sleep.

The reference Cloud's :meth:`~hublink.devcloud.server.DevCloud.wait_for`, the
demo's steps and the tests' ``support.polling.wait_until`` all wait this way.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

#: Seconds between two looks at the condition.
POLL = 0.02


async def wait_until(
    check: Callable[[], Any],
    timeout: float,  # noqa: ASYNC109 - polled against a deadline; the callers' signatures share it
    what: str = "",
    poll: float = POLL,
) -> Any:
    """Call ``check`` every ``poll`` seconds until it returns something truthy; that value.

    ``check`` may be a plain function or return an awaitable (an async
    function, ``asyncio.to_thread``); an exception it raises ends the wait.

    Raises:
        TimeoutError: ``timeout`` seconds passed first; the message names ``what``
            (or ``check``'s qualified name).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(check, "__qualname__", repr(check))
            raise TimeoutError(f"waited {timeout:g} s for {name}, in vain")
        await asyncio.sleep(poll)
