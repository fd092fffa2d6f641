"""At most a few failed tries a minute per client address (contract section 9)."""

from __future__ import annotations

import math
import time
from collections import deque

#: Failed tries allowed per window.
MAX_FAILURES = 5
#: The window, in seconds.
WINDOW = 60.0
#: Addresses remembered at most; the oldest are forgotten first.
MAX_CLIENTS = 4096


class RateLimiter:
    """Counts failures per client address in a sliding window."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may try now."""
        recent = self._recent(client)
        if len(recent) < self.max_failures:
            return 0
        return max(1, math.ceil(recent[0] + self.window - time.monotonic()))

    def failed(self, client: str) -> None:
        """Record a failed try by ``client``."""
        recent = self._recent(client)
        recent.append(time.monotonic())
        self._failures[client] = recent
        if len(self._failures) > MAX_CLIENTS:
            # dicts keep insertion order: drop the longest-known address.
            del self._failures[next(iter(self._failures))]

    def _recent(self, client: str) -> deque[float]:
        recent = self._failures.get(client, deque())
        horizon = time.monotonic() - self.window
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            self._failures.pop(client, None)
        return recent
