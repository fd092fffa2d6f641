"""The daemon's log output: the lines of one event-loop step leave in one write.

A Cloud flood logs a line a message, and a ``write`` plus ``flush`` a line made
the stream the largest cost of the receive loop: each write releases the GIL,
and the state store's writer thread takes it for a switch interval. Lines
logged on the event loop's thread wait in a list until the end of the current
loop step (``loop.call_soon``), then go out together; journald still gets one
entry a line (it splits on newlines). A line logged from any other thread, or
with no loop running, is written at once, after whatever is waiting, so the
order of lines is the order they were logged.

Nothing stays behind for long: the wait is one loop step (microseconds when
the loop is idle), :func:`flush` is called before the process reports a fatal
error, and an exit handler writes what is left.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from typing import Any, ClassVar, TextIO


class BatchedLogger:
    """A structlog logger writing rendered lines to ``stream``, batched per loop step.

    structlog calls the method named after the level with the rendered line;
    every level goes to the same stream, as with ``structlog.PrintLogger``.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def msg(self, message: str) -> None:
        """Queue ``message`` (a rendered line, without its newline) for the stream."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._lines.append(message)
            if loop is None:
                self._write_locked()
                return
            if self._scheduled:
                return
            self._scheduled = True
        loop.call_soon(self.flush)

    log = debug = info = warn = warning = msg
    err = error = critical = fatal = exception = failure = msg

    def flush(self) -> None:
        """Write every waiting line now. Never raises: a log line must not stop the daemon."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr (journald restarted, a terminal gone):
            # the lines are lost either way, the daemon goes on.
            pass


class BatchedLoggerFactory:
    """structlog ``logger_factory``: one :class:`BatchedLogger` for the process,
    which :func:`flush` and the exit handler reach."""

    #: The logger of the factory made last: the one in force.
    active: ClassVar[BatchedLogger | None] = None

    def __init__(self, stream: TextIO) -> None:
        flush()  # the lines of a logger this one replaces go first
        self.logger = BatchedLoggerFactory.active = BatchedLogger(stream)

    def __call__(self, *args: Any) -> BatchedLogger:
        return self.logger


def flush() -> None:
    """Write the lines waiting in the batched logger in force, if any."""
    if BatchedLoggerFactory.active is not None:
        BatchedLoggerFactory.active.flush()


atexit.register(flush)
