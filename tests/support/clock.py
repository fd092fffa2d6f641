"""A clock the test drives: wall time that can jump, and sleeps that end when the test says.

    clock = FakeClock(datetime(2026, 3, 27, 12, tzinfo=MADRID))
    task = asyncio.create_task(scheduler.run())
    await clock.advance(hours(48))       # elapsed time: wall and monotonic move together
    clock.jump(timedelta(days=160))      # NTP at boot: only the wall clock moves

It implements ``hublink.backup.schedule.Clock``. One task sleeps on it at a
time (the scheduler); :meth:`advance` waits, in real time, for that task to be
asleep before it moves the clock, so threads the task uses (its state file)
finish first.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from support.timing import scaled

#: Real seconds the sleeping task gets to come back to sleep before the test fails.
SETTLE_TIMEOUT = scaled(10.0)


class FakeClock:
    """Wall time and elapsed time under the test's control."""

    def __init__(self, start: datetime) -> None:
        self.wall = start
        self.elapsed = 0.0
        self._sleeper: tuple[float, asyncio.Future[None]] | None = None
        self._asleep = asyncio.Event()

    def now(self) -> datetime:
        """The wall time."""
        return self.wall

    async def sleep(self, seconds: float) -> None:
        """Sleep until :meth:`advance` has let ``seconds`` of elapsed time pass."""
        assert self._sleeper is None, "one sleeper at a time"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleeper = (self.elapsed + max(0.0, seconds), future)
        self._asleep.set()
        try:
            await future
        finally:
            self._sleeper = None
            self._asleep.clear()

    def jump(self, delta: timedelta) -> None:
        """Move the wall clock only, as NTP does (a sleeper is not woken by it)."""
        self.wall += delta

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, waking the sleeper at each of its deadlines on the way."""
        end = self.elapsed + seconds
        while True:
            await asyncio.wait_for(self._asleep.wait(), SETTLE_TIMEOUT)
            assert self._sleeper is not None
            deadline, future = self._sleeper
            if deadline > end:
                break
            self._move_to(deadline)
            self._asleep.clear()
            future.set_result(None)
        self._move_to(end)

    def _move_to(self, elapsed: float) -> None:
        self.wall += timedelta(seconds=elapsed - self.elapsed)
        self.elapsed = elapsed
