"""Scheduled backups (contract section 11) on a clock the test drives: one backup a day at
the schedule plus this hub's delay, through DST changes, restarts, a box that was off, and a
clock without RTC that NTP moves by months."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hublink.backup.schedule import (
    CHECK_INTERVAL,
    REQUESTED_BY,
    BackupScheduler,
    Plan,
    Schedule,
    ScheduleState,
)
from hublink.config import BackupSettings, Settings
from hublink.statedir import BACKUP_SCHEDULE
from support.clock import FakeClock

MADRID = ZoneInfo("Europe/Madrid")  # DST 2026: 29 March 02:00→03:00, 25 October 03:00→02:00
HOUR = 3600.0
DAY = 24 * HOUR


@dataclass
class Box:
    """A state dir, a fake clock, and the backups the scheduler ran (wall times, UTC)."""

    state_dir: Path
    clock: FakeClock
    runs: list[datetime] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def backup(self, requested_by: str) -> None:
        assert requested_by == REQUESTED_BY
        self.runs.append(self.clock.now().astimezone(UTC))

    def start(self, schedule: str, jitter: float, fraction: float = 0.5) -> BackupScheduler:
        settings = Settings(
            state_dir=self.state_dir,
            backup=BackupSettings(schedule=schedule, schedule_jitter=jitter),
        )
        scheduler = BackupScheduler(
            settings, self.backup, clock=self.clock, zone=MADRID, rand=lambda: fraction
        )
        self.tasks.append(asyncio.create_task(scheduler.run()))
        return scheduler

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        self.tasks.clear()

    def local_runs(self) -> list[str]:
        return [f"{run.astimezone(MADRID):%Y-%m-%d %H:%M:%S %Z}" for run in self.runs]

    def seed(self, fraction: float, last_slot: date | None) -> None:
        ScheduleState(fraction, last_slot).save(self.state_dir)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Callable[[datetime], Box]]:
    made: list[Box] = []

    def make(start: datetime) -> Box:
        made.append(Box(tmp_path / "state", FakeClock(start)))
        return made[-1]

    yield make
    for one in made:
        await one.stop()


def madrid(*args: int) -> datetime:
    return datetime(*args, tzinfo=MADRID)  # type: ignore[misc]


async def test_one_backup_a_day_at_the_schedule_plus_this_hubs_delay(
    box: Callable[[datetime], Box],
) -> None:
    hub = box(madrid(2026, 1, 10, 0, 0))
    scheduler = hub.start("03:30", jitter=600, fraction=0.5)
    await hub.clock.advance(1)
    assert scheduler.next_at == madrid(2026, 1, 10, 3, 35)
    await hub.clock.advance(3 * DAY)
    assert hub.local_runs() == [
        "2026-01-10 03:35:00 CET",
        "2026-01-11 03:35:00 CET",
        "2026-01-12 03:35:00 CET",
    ]
    assert scheduler.next_at == madrid(2026, 1, 13, 3, 35)
    path = hub.state_dir / BACKUP_SCHEDULE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ScheduleState.load(hub.state_dir) == ScheduleState(0.5, date(2026, 1, 12))


@pytest.mark.parametrize(
    ("start", "schedule", "expected"),
    [
        # Spring forward: 02:30 does not exist on 29 March; it runs once, at 03:30 CEST.
        (
            madrid(2026, 3, 27, 12),
            "02:30",
            ["2026-03-28 02:30:00 CET", "2026-03-29 03:30:00 CEST", "2026-03-30 02:30:00 CEST"],
        ),
        # Fall back: 02:30 happens twice on 25 October; it runs once, the first time.
        (
            madrid(2026, 10, 23, 12),
            "02:30",
            ["2026-10-24 02:30:00 CEST", "2026-10-25 02:30:00 CEST", "2026-10-26 02:30:00 CET"],
        ),
        # Times beside the change are untouched, one a day.
        (
            madrid(2026, 3, 27, 12),
            "03:00",
            ["2026-03-28 03:00:00 CET", "2026-03-29 03:00:00 CEST", "2026-03-30 03:00:00 CEST"],
        ),
        (
            madrid(2026, 10, 23, 12),
            "01:59",
            ["2026-10-24 01:59:00 CEST", "2026-10-25 01:59:00 CEST", "2026-10-26 01:59:00 CET"],
        ),
    ],
)
async def test_a_dst_change_neither_skips_nor_doubles_a_backup(
    box: Callable[[datetime], Box], start: datetime, schedule: str, expected: list[str]
) -> None:
    hub = box(start)
    hub.start(schedule, jitter=0)
    await hub.clock.advance(3 * DAY)
    assert hub.local_runs() == expected


async def test_a_clock_jumping_months_ahead_at_boot_runs_one_catch_up(
    box: Callable[[datetime], Box],
) -> None:
    # A box without RTC boots at the time it was switched off (its fake-hwclock)...
    hub = box(madrid(2025, 1, 1, 10, 0))
    hub.seed(0.25, date(2025, 1, 1))
    scheduler = hub.start("03:30", jitter=HOUR)
    await hub.clock.advance(5 * 60)
    assert hub.runs == []
    # ...then NTP sets the clock five and a half months ahead.
    hub.clock.jump(timedelta(days=165, hours=2))
    jumped = hub.clock.now()
    await hub.clock.advance(CHECK_INTERVAL)
    # Noticed within a minute (the wall clock is read every CHECK_INTERVAL), made up after
    # this hub's delay (a quarter of the hour's jitter).
    assert scheduler.next_at is not None
    assert timedelta(minutes=15) <= scheduler.next_at - jumped <= timedelta(minutes=16)
    await hub.clock.advance(HOUR)
    assert len(hub.runs) == 1
    assert jumped <= hub.runs[0] <= jumped + timedelta(hours=1)  # within the jitter window
    await hub.clock.advance(2 * DAY)
    assert hub.local_runs()[1:] == ["2025-06-16 03:45:00 CEST", "2025-06-17 03:45:00 CEST"]


async def test_a_restart_never_repeats_a_slot(box: Callable[[datetime], Box]) -> None:
    hub = box(madrid(2026, 5, 4, 3, 0))
    hub.start("03:30", jitter=600, fraction=0.0)
    await hub.clock.advance(HOUR)
    assert hub.local_runs() == ["2026-05-04 03:30:00 CEST"]
    await hub.stop()
    for _ in range(3):  # systemd restarts it three times that morning
        hub.start("03:30", jitter=600, fraction=0.9)
        await hub.clock.advance(HOUR)
        await hub.stop()
    hub.start("03:30", jitter=600)
    await hub.clock.advance(DAY)
    assert hub.local_runs() == ["2026-05-04 03:30:00 CEST", "2026-05-05 03:30:00 CEST"]


async def test_a_backup_missed_while_the_box_was_off_runs_within_the_jitter_window(
    box: Callable[[datetime], Box],
) -> None:
    hub = box(madrid(2026, 5, 6, 9, 12))  # switched on at 09:12; nobody ran 03:30 today
    hub.seed(0.5, date(2026, 5, 4))
    hub.start("03:30", jitter=HOUR)
    await hub.clock.advance(2 * HOUR)
    assert hub.local_runs() == ["2026-05-06 09:42:00 CEST"]  # the start plus this hub's delay
    await hub.clock.advance(DAY)
    assert hub.local_runs()[1:] == ["2026-05-07 04:00:00 CEST"]


async def test_when_the_regular_slot_falls_in_the_window_it_does_for_the_missed_one(
    box: Callable[[datetime], Box],
) -> None:
    hub = box(
        madrid(2026, 5, 6, 3, 20)
    )  # on at 03:20; yesterday's was missed, today's is due 04:00
    hub.seed(0.5, date(2026, 5, 4))
    hub.start("03:30", jitter=HOUR)
    await hub.clock.advance(DAY)
    assert hub.local_runs() == ["2026-05-06 04:00:00 CEST"]


async def test_a_clock_set_back_after_running_ahead_does_not_wait_for_that_date(
    box: Callable[[datetime], Box],
) -> None:
    # Backups ran while the clock said September; NTP brings it back to June.
    hub = box(madrid(2026, 6, 1, 12, 0))
    hub.seed(0.0, date(2026, 9, 1))
    hub.start("03:30", jitter=600)
    await hub.clock.advance(2 * DAY)
    assert hub.local_runs() == ["2026-06-02 03:30:00 CEST", "2026-06-03 03:30:00 CEST"]


async def test_the_delay_is_drawn_once_at_the_first_start_and_kept(
    box: Callable[[datetime], Box],
) -> None:
    hub = box(madrid(2026, 2, 2, 12, 0))
    first = hub.start("03:30", jitter=HOUR, fraction=0.75)
    await hub.clock.advance(1)
    await hub.stop()
    second = hub.start("03:30", jitter=HOUR, fraction=0.1)  # would draw otherwise
    await hub.clock.advance(1)
    assert first.next_at == second.next_at == madrid(2026, 2, 3, 4, 15)
    # A longer jitter scales the same draw: the delay stays within [0, jitter].
    await hub.stop()
    third = hub.start("03:30", jitter=2 * HOUR)
    await hub.clock.advance(1)
    assert third.next_at == madrid(2026, 2, 3, 5, 0)


async def test_an_unreadable_state_file_is_replaced_by_a_fresh_draw(
    box: Callable[[datetime], Box],
) -> None:
    hub = box(madrid(2026, 2, 2, 12, 0))
    hub.state_dir.mkdir(parents=True)
    (hub.state_dir / BACKUP_SCHEDULE).write_text("{not json")
    scheduler = hub.start("03:30", jitter=HOUR, fraction=0.5)
    await hub.clock.advance(1)
    assert scheduler.next_at == madrid(2026, 2, 3, 4, 0)
    assert ScheduleState.load(hub.state_dir) == ScheduleState(0.5, date(2026, 2, 2))


# --- the arithmetic, for every time of day, zone and delay -----------------------------

ZONES = ["Europe/Madrid", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "UTC"]


# Each example runs a whole year, so every one crosses both DST changes of its zone.
@settings(max_examples=100, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    at=st.times().map(lambda t: time(t.hour, t.minute)),
    delay=st.floats(min_value=0, max_value=DAY - 1),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
)
def test_a_running_clock_gets_exactly_one_backup_per_local_day(
    zone: str, at: time, delay: float, start: datetime
) -> None:
    schedule = Schedule(at, timedelta(seconds=delay), timedelta(seconds=delay), ZoneInfo(zone))
    now = start.replace(tzinfo=UTC)
    last = schedule.settle(now, None)
    runs: list[tuple[date, datetime]] = []
    while now < start.replace(tzinfo=UTC) + timedelta(days=370):
        plan = schedule.plan(now, last)
        if plan.at > now:
            now = plan.at
            continue
        runs.append((plan.slot, now))
        last = plan.slot
    days = [slot for slot, _ in runs]
    assert days == [
        days[0] + timedelta(days=n) for n in range(len(days))
    ]  # none skipped, none twice
    assert all(moment == schedule.due(slot) for slot, moment in runs)  # all on time
    # Each on its own local day, at the schedule's time (an hour later when DST skips it).
    for slot, moment in runs:
        local = (moment - timedelta(seconds=delay)).astimezone(ZoneInfo(zone))
        assert local.date() == slot
        assert (
            timedelta(0)
            <= local.replace(tzinfo=None) - datetime.combine(slot, at)
            <= (timedelta(hours=1))
        )


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    at=st.times().map(lambda t: time(t.hour, t.minute)),
    fraction=st.floats(min_value=0, max_value=0.999),
    off_for=st.floats(min_value=0, max_value=400 * DAY),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
)
def test_a_jump_of_the_clock_makes_up_at_most_one_backup(
    zone: str, at: time, fraction: float, off_for: float, start: datetime
) -> None:
    jitter = timedelta(hours=1)
    schedule = Schedule(at, jitter * fraction, jitter, ZoneInfo(zone))
    now = start.replace(tzinfo=UTC)
    last = schedule.settle(now, None)
    now += timedelta(seconds=off_for)  # off, or a clock jump
    jumped = now
    runs: list[datetime] = []
    pending: Plan | None = None
    while now <= jumped + jitter:
        plan = schedule.plan(now, last, pending)
        if plan.at > now:
            pending = plan if plan.catch_up else None
            now = plan.at
            continue
        runs.append(now)
        last = plan.slot
        pending = None
    assert len(runs) <= 2  # at most one make-up, and the next regular slot may fall in the hour
    if off_for > 2 * DAY:
        assert runs and runs[0] <= jumped + jitter  # a missed day runs within the jitter window
