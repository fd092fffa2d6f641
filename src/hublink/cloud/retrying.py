"""REST retries: tenacity driven by :func:`hublink.retry.is_transient` (contract section 1).

Transient failures (connection refused or reset, DNS, timeouts, 429, 5xx)
are retried with full-jitter backoff, never sooner than the server's
``Retry-After``; other 4xx never are.
"""

from __future__ import annotations

import aiohttp
import structlog
import tenacity

from hublink.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    describe_transient,
    full_jitter,
    is_transient,
    retry_after_of,
)

log = structlog.get_logger(__name__)


def client_timeout(policy: RetryPolicy, elapsed: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for an attempt starting ``elapsed`` seconds into the call."""
    total, connect, sock_read = policy.timeout(elapsed)
    return aiohttp.ClientTimeout(total=total, connect=connect, sock_read=sock_read)


class _WaitAtLeastRetryAfter:
    """tenacity wait: full-jitter backoff, but never shorter than the server's ``Retry-After``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = full_jitter(
            retry_state.attempt_number, base=self.policy.backoff_base, cap=self.policy.backoff_max
        )
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        hinted = retry_after_of(exc) if exc is not None else None
        return max(delay, hinted or 0.0)


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    log.info(
        "cloud request failed, retrying",
        attempt=retry_state.attempt_number,
        wait=round(retry_state.upcoming_sleep, 2),
        error=describe_transient(exc) if exc is not None else None,
    )


def rest_retrying(policy: RetryPolicy = DEFAULT_POLICY) -> tenacity.AsyncRetrying:
    """The tenacity controller for one REST call: retries only :func:`is_transient` failures.

    The last failure is re-raised as is once the attempts or the deadline run
    out; the caller turns it into :class:`~hublink.errors.CloudUnreachableError`.
    """
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.attempts)
    if policy.deadline is not None:
        stop = stop | tenacity.stop_before_delay(policy.deadline)
    return tenacity.AsyncRetrying(
        stop=stop,
        wait=_WaitAtLeastRetryAfter(policy),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=_log_retry,
        reraise=True,
    )
