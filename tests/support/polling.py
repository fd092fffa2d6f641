"""How tests wait for what another task or process will do: poll with a deadline, never sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

POLL = 0.02


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; that value.

    Raises:
        TimeoutError: ``timeout`` seconds passed first; the message names ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout} s for {what or predicate}, in vain")
        await asyncio.sleep(POLL)
