"""One knob for every timing the tests choose: ``HUBLINK_TEST_TIME_FACTOR``.

The tests shrink the daemon's timings (heartbeats every 0.2 s, reconnects
after 0.05 s, hooks killed after a second) so that the whole suite runs in
minutes. On a slow or overloaded machine those choices can turn into false
failures; ``HUBLINK_TEST_TIME_FACTOR=3 make pytest`` stretches all of them at
once: the fast settings given to daemons, every :func:`support.polling.wait_until`
deadline and pytest's per-test timeout. websockets' own test suite scales its
timeouts the same way (``WEBSOCKETS_TESTS_TIMEOUT_FACTOR``).

What a contract promises to a user ("stops within five seconds") is not
scaled: only the tests' own choices are.
"""

from __future__ import annotations

import os

#: How much longer than on a developer's machine every test timing may be (1 = as written).
TIME_FACTOR = float(os.environ.get("HUBLINK_TEST_TIME_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """``seconds`` (a timing chosen by a test) stretched by :data:`TIME_FACTOR`."""
    return seconds * TIME_FACTOR
