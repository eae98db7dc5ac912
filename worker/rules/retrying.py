"""Retry policy: Retry-After parsing, a wait that never undercuts it, and the tenacity policy.

Retries live only here. The SDK runs with max_retries=0 because it retries 409 and 503/4004
(wrong for us) and ignores a Retry-After over 60 s (docs/linq-contract.md §9.1).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import tenacity
from tenacity import RetryCallState

from worker.rules import bounds
from worker.rules.classify import Verdict


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    budget_s: float = 30.0
    base_s: float = 0.5
    cap_s: float = 8.0


class Retryable(Exception):
    """Raised by one attempt to ask tenacity for another; carries the verdict and the wait floor."""

    def __init__(self, verdict: Verdict, retry_after_s: float | None) -> None:
        super().__init__(verdict.action.value)
        self.verdict = verdict
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Exhausted:
    """The run stopped retrying: attempts used up, or the next wait does not fit the budget."""

    last: Retryable
    next_wait_s: float
    attempts: int


def parse_retry_after(headers: Mapping[str, str], body_retry_after: object, now: dt.datetime) -> float | None:
    """Seconds to wait, the longest of every hint given (header ms, header seconds/date, body),
    each finite and clamped to [0, bounds.RETRY_AFTER_MAX_S]; unusable hints are ignored."""
    hints: list[float | None] = []
    ms = headers.get("retry-after-ms")
    if ms is not None:
        with contextlib.suppress(ValueError):
            hints.append(bounds.retry_after(float(ms) / 1000.0))
    raw = headers.get("retry-after")
    if raw is not None:
        hints.extend(_retry_after_value(raw.strip(), now))
    if body_retry_after is not None:
        hints.append(bounds.retry_after(body_retry_after))
    usable = [h for h in hints if h is not None]
    return max(usable) if usable else None


def _retry_after_value(raw: str, now: dt.datetime) -> list[float | None]:
    try:
        return [bounds.retry_after(float(raw))]
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, OverflowError, IndexError):
        return []
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return [bounds.retry_after((when - now).total_seconds())]


def full_jitter(attempt: int, base_s: float, cap_s: float, rng: Callable[[], float] = random.random) -> float:
    """AWS "full jitter": uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return float(rng() * min(cap_s, base_s * 2.0 ** max(0, attempt - 1)))


def wait_for(state: RetryCallState, policy: RetryPolicy, rng: Callable[[], float] = random.random) -> float:
    """Jittered backoff, but never less than the server's Retry-After."""
    jitter = full_jitter(state.attempt_number, policy.base_s, policy.cap_s, rng)
    exc = state.outcome.exception() if state.outcome is not None else None
    floor = exc.retry_after_s if isinstance(exc, Retryable) and exc.retry_after_s else 0.0
    return max(jitter, floor)


def build(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Any] = tenacity.nap.sleep,
    rng: Callable[[], float] = random.random,
    before_sleep: Callable[[RetryCallState], Any] | None = None,
) -> tenacity.Retrying:
    """The tenacity policy: retry Retryable, at most `attempts`, never sleeping past the budget.

    When it gives up it returns an `Exhausted` (via retry_error_callback) carrying the wait it
    would have needed, so the caller can reschedule the chat instead of sleeping.
    """

    def give_up(state: RetryCallState) -> Exhausted:
        exc = state.outcome.exception() if state.outcome is not None else None
        assert isinstance(exc, Retryable)
        return Exhausted(last=exc, next_wait_s=state.upcoming_sleep, attempts=state.attempt_number)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Retryable),
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_before_delay(policy.budget_s),
        wait=lambda state: wait_for(state, policy, rng),
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
        reraise=False,
    )
