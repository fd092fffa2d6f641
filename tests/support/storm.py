"""The reconnect storm's arithmetic: arrivals per second, the clumping bound, 10,000 hubs.

Arrival times are ``time.monotonic()`` seconds, as the reference Cloud records
each handshake (:attr:`hublink.devcloud.records.Handshake.at`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from hublink.devcloud import DevCloud

#: The issue's goal: no second busier than 1.3 x the fleet's even share.
CLUMPING_GOAL = 1.3
#: Poisson noise allowed for a small fleet, in standard deviations: the short
#: form's fleet is too small for 1.3x to tell clumping from chance.
CHANCE_SIGMAS = 4.0


def first_accepted(cloud: DevCloud, hub_ids: Iterable[str], since: float) -> dict[str, float]:
    """Each hub's first accepted handshake at or after ``since``, in seconds after it."""
    found: dict[str, float] = {}
    for hub_id in hub_ids:
        for attempt in cloud.handshakes(hub_id):
            if attempt.status == 101 and attempt.at >= since:
                found[hub_id] = attempt.at - since
                break
    return found


def per_second(offsets: Iterable[float]) -> list[int]:
    """How many of ``offsets`` (seconds) fall in each whole second from 0."""
    values = list(offsets)
    counts = [0] * (int(max(values, default=0.0)) + 1)
    for value in values:
        counts[int(value)] += 1
    return counts


def clumping_limit(fleet: int, spread: float, *, full: bool) -> float:
    """The busiest second allowed: 1.3 x the even share, or share + 4 sigma for a small fleet."""
    share = fleet / spread
    if full:
        return CLUMPING_GOAL * share
    return max(CLUMPING_GOAL * share, share + CHANCE_SIGMAS * math.sqrt(share))


def expected_busiest(fleet: int, spread: float) -> float:
    """The busiest of ``spread`` one-second bins when ``fleet`` arrivals fall uniformly.

    Each bin is about Poisson with mean ``fleet / spread``; the largest of ``n``
    such bins sits near ``mean + sqrt(2 ln n) * sqrt(mean)``.
    """
    share = fleet / spread
    bins = max(spread, 2.0)
    return share + math.sqrt(2 * math.log(bins)) * math.sqrt(share)


def extrapolation(
    *,
    fleet: int,
    spread: float,
    busiest: int,
    back_in: float,
    restart_s: float,
    retried: int,
    target: int = 10_000,
) -> list[str]:
    """Markdown lines: what the measured curve says about a fleet of ``target`` hubs."""
    share = fleet / spread
    big_share = target / spread
    big_busiest = expected_busiest(target, spread)
    late = retried / fleet if fleet else 0.0
    return [
        f"Measured: {fleet} hubs, `reconnect_spread` {spread:g} s: an even share of "
        f"{share:.0f} handshakes/s; the busiest second had {busiest} "
        f"({busiest / share:.2f}x the share; uniform arrivals predict "
        f"{expected_busiest(fleet, spread):.0f}); all back {back_in:.1f} s after the 1012. "
        f"The Cloud was away {restart_s:.2f} s; {retried} hubs ({100 * late:.1f} %) needed "
        "more than one attempt.",
        "",
        f"On paper, {target:,} hubs with the same settings: the first attempts fall uniformly "
        f"over the {spread:g} s window, {big_share:,.0f} handshakes/s on average; the busiest "
        f"second ≈ {big_busiest:,.0f} ({big_busiest / big_share:.2f}x: relative noise shrinks "
        f"as 1/√share, so a bigger fleet is *less* clumped). About {late * target:,.0f} hubs "
        f"({100 * late:.1f} %, the share measured here) would try while the Cloud is still "
        "away and come back after their first backoff step (`reconnect_min`, 1 s), on top of "
        "the even share. A Cloud that cannot take "
        f"{big_busiest:,.0f} handshakes/s should raise `reconnect_spread` (the contract caps it "
        "at `reconnect_max`, 60 s: up to ~170/s for 10,000 hubs) or answer 503 with "
        "`Retry-After`, which the fleet honours (the next row).",
    ]
