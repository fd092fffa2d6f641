"""The daemon's line budget: at most :data:`BURST` lines of one event a second.

The Cloud decides how many messages arrive, and each logs a line: a flood
(thousands a second) would spend most of the receive loop on log lines, and
journald drops a service's lines beyond its own rate limit anyway (10,000
per 30 s by default, ``RateLimitBurst=``), saying only how many. Here the
lines past the budget are counted instead of rendered, and one line says how
many of which event were left out, once the second is over. What those lines
said is not lost where it matters: every message is still handled and
recorded (``hublink status`` shows the updates and revocations).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

#: Lines of one event (the same message text) written per window.
BURST = 20
#: The window, in seconds.
WINDOW = 1.0
#: The event of the line that reports what was left out.
SUPPRESSED = "log lines left out"
#: Windows kept at most; older ones are forgotten (an event with a varying text).
MAX_EVENTS = 1000


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    left_out: int = 0


class LineBudget:
    """structlog processor: passes :data:`BURST` lines of an event per window, drops the rest.

    The count of dropped lines is logged (event :data:`SUPPRESSED`, fields
    ``line`` and ``count``) when the window ends: by a timer on the running
    event loop, or with the event's next line when there is no loop.
    """

    def __init__(
        self,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event = str(event_dict.get("event", ""))
        if event == SUPPRESSED:
            return event_dict
        now = self._clock()
        with self._lock:
            current = self._windows.get(event)
            if current is None or now - current.start >= self.window:
                if current is not None and current.left_out:
                    # No timer said it (no loop): this line says it.
                    event_dict["left_out_before"] = current.left_out
                self._windows[event] = _Window(start=now, written=1)
                self._forget_old()
                return event_dict
            if current.written < self.burst:
                current.written += 1
                return event_dict
            current.left_out += 1
            first = current.left_out == 1
            remaining = max(0.0, current.start + self.window - now)
        if first:
            self._report_later(event, remaining)
        raise structlog.DropEvent

    def _report_later(self, event: str, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # said by the event's next line instead
        loop.call_later(delay, self._report, event)

    def _report(self, event: str) -> None:
        with self._lock:
            current = self._windows.get(event)
            count = current.left_out if current is not None else 0
            if current is not None:
                current.left_out = 0
        if count:
            structlog.get_logger(__name__).warning(
                SUPPRESSED, line=event, count=count, seconds=self.window
            )

    def _forget_old(self) -> None:
        # Events whose text varies (a library's debug lines) would grow the
        # table without end; forgetting one with nothing left out only
        # restarts its budget.
        if len(self._windows) > MAX_EVENTS:
            for event, window in list(self._windows.items()):
                if not window.left_out:
                    del self._windows[event]
