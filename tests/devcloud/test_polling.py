"""Polling with a deadline: what the Cloud's wait_for, the demo and the tests' wait_until share."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from hublink.devcloud.polling import wait_until


async def test_the_first_truthy_value_is_returned_from_a_plain_or_async_check() -> None:
    counter = itertools.count()
    assert await wait_until(lambda: next(counter) >= 3 and "ready", timeout=5) == "ready"

    async def later() -> int:
        await asyncio.sleep(0)
        return 7

    assert await wait_until(later, timeout=5) == 7


async def test_a_timeout_names_what_was_awaited() -> None:
    with pytest.raises(TimeoutError, match="for the link, in vain"):
        await wait_until(lambda: False, timeout=0.05, what="the link")

    def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match="never"):
        await wait_until(never, timeout=0.05)


async def test_an_error_in_the_check_ends_the_wait() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await wait_until(broken, timeout=5)
