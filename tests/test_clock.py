"""The one home of time: the wire format, HTTP dates, clock skew and how spans are printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hublink.clock import (
    MAX_CLOCK_SKEW,
    clock_skew,
    describe_duration,
    describe_skew,
    iso_z,
    parse_http_date,
    skew_is_too_large,
    utc_now,
)

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_utc_now_is_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is UTC
    assert abs((datetime.now(UTC) - now).total_seconds()) < 5


def test_iso_z_is_the_contracts_format_in_utc() -> None:
    assert iso_z(MOMENT) == "2026-01-02T03:04:05Z"
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert iso_z(plus_two) == "2026-01-02T03:04:05Z"


def test_iso_z_keeps_none() -> None:
    assert iso_z(None) is None
    assert iso_z(None, precise=True) is None


def test_iso_z_round_trips_through_fromisoformat() -> None:
    text = iso_z(MOMENT)
    assert datetime.fromisoformat(text) == MOMENT.replace(microsecond=0)
    precise = iso_z(MOMENT, precise=True)
    assert precise == "2026-01-02T03:04:05.678901Z"
    assert datetime.fromisoformat(precise) == MOMENT


def test_precise_iso_z_omits_zero_microseconds() -> None:
    assert iso_z(MOMENT.replace(microsecond=0), precise=True) == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ],
)
def test_http_date_forms(text: str) -> None:
    assert parse_http_date(text) == datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


@pytest.mark.parametrize("text", [None, "", "   ", "soon", "Sun, 99 Nov 1994 08:49:37 GMT", "120"])
def test_garbage_is_not_an_http_date(text: str | None) -> None:
    assert parse_http_date(text) is None


def test_zone_less_date_is_not_an_http_date() -> None:
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37") is None
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 -0000") is None


def test_other_zones_are_converted_to_utc() -> None:
    parsed = parse_http_date("Sun, 06 Nov 1994 10:49:37 +0200")
    assert parsed == datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    assert parsed is not None and parsed.tzinfo is UTC


def test_skew_is_the_clouds_clock_minus_ours() -> None:
    server = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert clock_skew(server, now=server.timestamp() - 90) == 90.0
    assert clock_skew(server, now=server.timestamp() + 30) == -30.0


def test_skew_within_the_limit_is_fine_and_beyond_it_is_not() -> None:
    assert MAX_CLOCK_SKEW == 60
    assert not skew_is_too_large(None)
    assert not skew_is_too_large(0.0)
    assert not skew_is_too_large(60.0)
    assert not skew_is_too_large(-60.0)
    assert skew_is_too_large(60.5)
    assert skew_is_too_large(-61.0)


def test_skew_says_which_way_the_clock_is_off() -> None:
    assert describe_skew(420.0) == "this machine's clock is 7 min behind the Cloud's"
    assert describe_skew(-7200.0) == "this machine's clock is 2 h ahead of the Cloud's"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0 s"),
        (0.4, "0 s"),
        (59.0, "59 s"),
        (61.4, "1 min 1 s"),
        (119.4, "1 min 59 s"),
        (419.6, "7 min"),
        (420.0, "7 min"),
        (2 * 3600 + 1, "2 h"),
        (2 * 3600 + 90, "2 h 2 min"),
        (3 * 86400 + 60, "3 d"),
        (3 * 86400 + 3600, "3 d 1 h"),
    ],
)
def test_durations_are_shown_in_at_most_two_units(seconds: float, shown: str) -> None:
    assert describe_duration(seconds) == shown
