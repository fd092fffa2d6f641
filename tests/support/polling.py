"""How tests wait for what another task or process will do: poll with a deadline, never sleep.

Synchronous tests call ``asyncio.run(wait_until(...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hublink.devcloud import polling
from support.timing import scaled

#: Seconds between two looks at the predicate.
POLL = polling.POLL


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "", poll: float = POLL
) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value.

    ``predicate`` may be a plain function or return an awaitable (an async
    function, ``asyncio.to_thread``); exceptions it raises end the wait.
    ``timeout`` is in seconds as the test chose it, stretched by
    :data:`support.timing.TIME_FACTOR`; the polling is
    :func:`hublink.devcloud.polling.wait_until`.

    Raises:
        TimeoutError: the (scaled) timeout passed first; the message names ``what``.
    """
    return await polling.wait_until(predicate, scaled(timeout), what, poll)
