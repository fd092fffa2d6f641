"""Scheduled backups (contract section 11): one a day at ``backup.schedule``, local time.

Words used here:

    slot        one local calendar day's backup, named by its date (2026-03-29)
    due(day)    ``backup.schedule`` on that day in the local zone, plus this hub's delay
    delay       fraction * ``backup.schedule_jitter``; the fraction is drawn once, at
                registration (or at the first start without one), uniformly in [0, 1)
                and kept in ``{state_dir}/backup-schedule.json`` with the last slot done

Clock trouble must neither double nor skip a backup. A Hub box may have no
real-time clock: it boots at a stale time, then NTP moves the clock by months.

- Each local day has exactly one due time. A time that a spring-forward day
  lacks is read with the offset before the change (02:30 becomes 03:30); a time
  a fall-back day has twice is the first one (``fold=0``). DST skips no day and
  doubles none.
- The last slot done is written to the state dir after each run: a restart never
  repeats it.
- The wall clock is read again at least every :data:`CHECK_INTERVAL` seconds
  (asyncio sleeps on the monotonic clock, which NTP's jumps do not move), and only
  the latest due slot is ever made up: a clock jumping months ahead runs one
  backup, not hundreds.
- A slot noticed within :data:`GRACE` of its due time runs at once. Later than
  that it was missed (the box was off, asleep, or its clock jumped) and is made up
  after this hub's delay, within the jitter window after the start, so that a fleet
  powered up together does not upload together; unless the next regular slot falls
  in that window anyway, which then does for both.
- A last slot done more than a day ahead of the clock (it ran while the clock was
  wrong, then NTP set it back) is reset to the latest slot due now, so that nothing
  waits for the wrong date to come round again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from hublink.clock import iso_z, utc_now
from hublink.fsutil import atomic_write
from hublink.statedir import BACKUP_SCHEDULE

if TYPE_CHECKING:
    from hublink.config import Settings

log = structlog.get_logger(__name__)

#: ``requested_by`` of a scheduled backup's answer frame (contract section 11).
REQUESTED_BY = "schedule"
#: Longest sleep between two readings of the wall clock, in seconds.
CHECK_INTERVAL = 60.0
#: A slot noticed this long after its due time is still on time; later, it was missed.
GRACE = timedelta(minutes=5)
STATE_VERSION = 1
ZONE_FILE = Path("/etc/localtime")

#: Runs one backup and queues its answer; the argument is ``requested_by``.
BackupRun = Callable[[str], Awaitable[object]]


class Clock(Protocol):
    """Wall time and sleeping, injected so that tests can drive both."""

    def now(self) -> datetime:
        """The current wall time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of elapsed time (not wall time: a clock jump does not end it)."""
        ...


class SystemClock:
    """The machine's clock: ``utc_now`` and ``asyncio.sleep``."""

    def now(self) -> datetime:
        """The current time, UTC."""
        return utc_now()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``: monotonic, untouched by clock jumps."""
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What ``{state_dir}/backup-schedule.json`` keeps: the drawn fraction, the last slot done."""

    fraction: float
    last_slot: date | None = None

    @classmethod
    def load(cls, state_dir: Path) -> ScheduleState | None:
        """The saved state; None when there is none or it cannot be used (logged)."""
        path = state_dir / BACKUP_SCHEDULE
        try:
            data = json.loads(path.read_text())
            fraction = float(data["fraction"])
            last = data.get("last_slot")
            state = cls(fraction, date.fromisoformat(last) if last else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.warning(
                "the backup schedule's state cannot be read; drawing a new delay",
                path=str(path),
                error=str(err),
            )
            return None
        if not 0.0 <= state.fraction < 1.0:
            log.warning("the backup schedule's state is out of range; drawing a new delay")
            return None
        return state

    def save(self, state_dir: Path) -> None:
        """Write it atomically, mode 0600."""
        data = {
            "version": STATE_VERSION,
            "fraction": self.fraction,
            "last_slot": self.last_slot.isoformat() if self.last_slot else None,
        }
        atomic_write(state_dir / BACKUP_SCHEDULE, json.dumps(data).encode() + b"\n")


def draw_delay(state_dir: Path, *, rand: Callable[[], float] = random.random) -> ScheduleState:
    """Draw this hub's delay anew (registration) and save it; the last slot done is kept."""
    previous = ScheduleState.load(state_dir)
    state = ScheduleState(rand(), previous.last_slot if previous else None)
    state.save(state_dir)
    return state


@dataclass(frozen=True, slots=True)
class Plan:
    """The next backup: which slot it does, when (UTC), and whether it makes up a missed one."""

    slot: date
    at: datetime
    catch_up: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    """The daily time, this hub's delay, the zone: the arithmetic of slots (no I/O, no clock)."""

    at: time
    delay: timedelta
    jitter: timedelta
    zone: tzinfo

    @classmethod
    def from_settings(cls, settings: Settings, fraction: float, zone: tzinfo) -> Schedule:
        """The schedule of ``backup.schedule`` and ``backup.schedule_jitter``.

        Raises:
            ValueError: ``backup.schedule`` is unset (check it first).
        """
        if settings.backup.schedule is None:
            raise ValueError("backup.schedule is not set")
        hours, minutes = settings.backup.schedule.split(":")
        jitter = timedelta(seconds=settings.backup.schedule_jitter)
        return cls(time(int(hours), int(minutes)), jitter * fraction, jitter, zone)

    def due(self, day: date) -> datetime:
        """When ``day``'s slot is due, in UTC (see the module docstring for DST)."""
        local = datetime.combine(day, self.at, tzinfo=self.zone)  # fold=0
        return local.astimezone(UTC) + self.delay

    def latest_due(self, now: datetime) -> date:
        """The last slot whose due time is ``now`` or earlier."""
        today = now.astimezone(self.zone).date()
        # The delay is under a day, so the due time lies within two days of the slot.
        for back in range(3):
            day = today - timedelta(days=back)
            if self.due(day) <= now:
                return day
        raise AssertionError("a due time more than two days after its slot")  # pragma: no cover

    def plan(self, now: datetime, last_slot: date, pending: Plan | None = None) -> Plan:
        """The next backup after ``last_slot``, as seen at ``now``.

        ``pending`` is the make-up planned earlier, kept so that re-planning
        every minute does not push it back.
        """
        latest = self.latest_due(now)
        upcoming = max(latest, last_slot) + timedelta(days=1)
        if latest <= last_slot:
            return Plan(upcoming, self.due(upcoming))
        if now - self.due(latest) <= GRACE:
            return Plan(latest, now)
        # Decided when the miss was noticed; a clock set back since then plans it anew.
        if pending is not None and pending.catch_up and pending.at <= now + self.delay:
            return Plan(latest, pending.at, catch_up=True)
        if self.due(upcoming) <= now + self.jitter:
            return Plan(upcoming, self.due(upcoming))
        return Plan(latest, now + self.delay, catch_up=True)

    def settle(self, now: datetime, last_slot: date | None) -> date:
        """``last_slot`` fit to plan with: a first start or a clock that went back makes it the
        latest slot due, so that neither runs a backup at once nor waits for a date to return."""
        latest = self.latest_due(now)
        if last_slot is None or last_slot > latest + timedelta(days=1):
            return latest
        return last_slot


def local_zone() -> tzinfo:
    """The box's time zone: ``$TZ`` (a zone name), else ``/etc/localtime``, else UTC."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        try:
            if name.startswith("/"):
                with Path(name).open("rb") as handle:
                    return ZoneInfo.from_file(handle, key=name)
            return ZoneInfo(name)
        except (OSError, ValueError, ZoneInfoNotFoundError):
            log.warning("TZ names no known time zone; using /etc/localtime", tz=name)
    try:
        with ZONE_FILE.open("rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        log.warning("no local time zone found; the backup schedule is in UTC")
        return UTC


class BackupScheduler:
    """The daemon's task that runs :data:`REQUESTED_BY` backups on ``backup.schedule``.

    Args:
        settings: ``backup.schedule``, ``backup.schedule_jitter``, ``state_dir``.
        run: backs up and queues the answer (the dispatcher's ``back_up``).
        clock: wall time and sleep (tests drive a fake one).
        zone: the local zone (default: :func:`local_zone`).
        rand: draws the fraction when the state dir has none.
    """

    def __init__(
        self,
        settings: Settings,
        run: BackupRun,
        *,
        clock: Clock | None = None,
        zone: tzinfo | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._run = run
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._zone = zone
        self._rand = rand
        self._next: datetime | None = None

    @property
    def next_at(self) -> datetime | None:
        """When the next scheduled backup is due (UTC), once the task has planned it."""
        return self._next

    async def run(self) -> None:
        """Back up at every slot until cancelled; returns at once when no schedule is set."""
        if self.settings.backup.schedule is None:
            return
        state_dir = self.settings.state_dir
        zone = self._zone if self._zone is not None else await asyncio.to_thread(local_zone)
        state = await asyncio.to_thread(ScheduleState.load, state_dir)
        if state is None:
            state = ScheduleState(self._rand())
        schedule = Schedule.from_settings(self.settings, state.fraction, zone)
        log.info(
            "backups scheduled",
            at=self.settings.backup.schedule,
            zone=str(zone),
            delay=round(schedule.delay.total_seconds()),
        )
        if self.settings.backup.database is None:
            log.warning(
                "backup.schedule is set but backup.database is not: every scheduled backup "
                "will answer backup_failed",
                hint="set backup.database to the Hub's SQLite file",
            )
        pending: Plan | None = None
        while True:
            now = self._clock.now()
            settled = schedule.settle(now, state.last_slot)
            if settled != state.last_slot:
                if state.last_slot is not None:
                    log.warning(
                        "the last scheduled backup lies ahead of the clock; starting afresh",
                        last_slot=str(state.last_slot),
                    )
                state = replace(state, last_slot=settled)
                await asyncio.to_thread(state.save, state_dir)
            assert state.last_slot is not None
            plan = schedule.plan(now, state.last_slot, pending)
            self._next = plan.at
            if plan.at > now:
                pending = plan if plan.catch_up else None
                await self._clock.sleep(min((plan.at - now).total_seconds(), CHECK_INTERVAL))
                continue
            pending = None
            await self._back_up(plan)
            state = replace(state, last_slot=plan.slot)
            await asyncio.to_thread(state.save, state_dir)

    async def _back_up(self, plan: Plan) -> None:
        log.info(
            "scheduled backup starting",
            slot=plan.slot.isoformat(),
            due=iso_z(plan.at),
            missed=plan.catch_up,
        )
        try:
            await self._run(REQUESTED_BY)
        except Exception:
            # The slot still counts as done: a bug here must not run it again and again.
            log.exception("scheduled backup failed", slot=plan.slot.isoformat())
