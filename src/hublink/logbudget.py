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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

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
    """Passes :data:`BURST` lines of an event per window, leaves the rest out.

    The count of lines left out is logged (event :data:`SUPPRESSED`, fields
    ``line`` and ``count``) when the window ends: by a timer on the running
    event loop, or with the event's next line when there is no loop.
    :func:`budgeted` applies it to a structlog logger class.
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

    def admit(self, event: str) -> int | None:
        """None when the line of ``event`` is to be left out; else how many lines of it
        were left out before it that no timer reported (usually 0)."""
        if event == SUPPRESSED:
            return 0
        now = self._clock()
        with self._lock:
            current = self._windows.get(event)
            if current is None or now - current.start >= self.window:
                # A count no timer said (no loop) is said by this line.
                earlier = current.left_out if current is not None else 0
                self._windows[event] = _Window(start=now, written=1)
                self._forget_old()
                return earlier
            if current.written < self.burst:
                current.written += 1
                return 0
            current.left_out += 1
            if current.left_out > 1:
                return None  # the flood's common case: the report is due already
            remaining = max(0.0, current.start + self.window - now)
        self._report_later(event, remaining)
        return None

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


def budgeted(base: type[FilteringBoundLogger], budget: LineBudget) -> type[FilteringBoundLogger]:
    """``base`` (a structlog wrapper class) whose lines pass ``budget`` first.

    The check sits in ``_proxy_to_logger``, the hook structlog leaves to custom
    wrapper classes (structlog's docs, "Custom wrappers"), before the processor
    chain: a line left out costs no copy of the context and no processor. The
    standard library's lines come through the same loggers (:mod:`hublink.logs`).
    """

    class Budgeted(base):  # type: ignore[valid-type,misc]  # a class made at run time
        def _proxy_to_logger(
            self, method_name: str, event: str | None = None, **event_kw: Any
        ) -> Any:
            earlier = budget.admit(str(event))
            if earlier is None:
                return None
            if earlier:
                event_kw["left_out_before"] = earlier
            return super()._proxy_to_logger(method_name, event, **event_kw)

    Budgeted.__name__ = Budgeted.__qualname__ = f"Budgeted{base.__name__}"
    return Budgeted
