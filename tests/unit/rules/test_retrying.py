from __future__ import annotations

import datetime as dt

import pytest

from worker.rules.classify import Action, Verdict
from worker.rules.retrying import Exhausted, Retryable, RetryPolicy, build, full_jitter, parse_retry_after
from worker.rules.states import AttemptOutcome

NOW = dt.datetime(2026, 3, 2, 15, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({}, None, None),
        ({"retry-after": "30"}, None, 30.0),
        ({"retry-after": "1.5"}, None, 1.5),
        ({"retry-after-ms": "2500"}, None, 2.5),
        ({}, 12, 12.0),
        # The longest hint wins: never undercut any of them.
        ({"retry-after": "5"}, 30, 30.0),
        ({"retry-after": "45", "retry-after-ms": "1000"}, 10, 45.0),
        ({"retry-after": "Mon, 02 Mar 2026 15:05:05 GMT"}, None, 60.0),
        ({"retry-after": "Mon, 02 Mar 2026 15:00:00 GMT"}, None, 0.0),
        ({"retry-after": "soon"}, None, None),
        ({"retry-after-ms": "x", "retry-after": "3"}, None, 3.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], body: float | None, expected: float | None) -> None:
    assert parse_retry_after(headers, body, NOW) == expected


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)])
def test_full_jitter_bounds(attempt: int, ceiling: float) -> None:
    assert full_jitter(attempt, 0.5, 8.0, rng=lambda: 0.0) == 0.0
    assert full_jitter(attempt, 0.5, 8.0, rng=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


RETRY = Verdict(Action.RETRY, AttemptOutcome.RETRYABLE)
LIMITED = Verdict(Action.RATE_LIMITED, AttemptOutcome.RETRYABLE)


def test_retries_until_success_and_sleeps_jittered() -> None:
    sleeps: list[float] = []
    calls = iter([Retryable(RETRY, None), Retryable(RETRY, None), "ok"])

    def attempt() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, str)
        return item

    retrying = build(RetryPolicy(attempts=4, budget_s=30), sleep=sleeps.append, rng=lambda: 0.5)
    assert retrying(attempt) == "ok"
    assert sleeps == [0.25, 0.5]


def test_gives_up_after_max_attempts() -> None:
    sleeps: list[float] = []
    count = 0

    def attempt() -> str:
        nonlocal count
        count += 1
        raise Retryable(RETRY, None)

    result = build(RetryPolicy(attempts=4, budget_s=30), sleep=sleeps.append, rng=lambda: 0.5)(attempt)
    assert isinstance(result, Exhausted)
    assert count == 4
    assert result.attempts == 4
    assert len(sleeps) == 3


def test_retry_after_is_never_undercut() -> None:
    sleeps: list[float] = []
    calls = iter([Retryable(LIMITED, 7.0), "ok"])

    def attempt() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, str)
        return item

    assert build(RetryPolicy(budget_s=30), sleep=sleeps.append, rng=lambda: 0.1)(attempt) == "ok"
    assert sleeps == [7.0]


def test_retry_after_beyond_budget_reschedules_instead_of_sleeping() -> None:
    sleeps: list[float] = []

    def attempt() -> str:
        raise Retryable(LIMITED, 300.0)

    result = build(RetryPolicy(budget_s=30), sleep=sleeps.append)(attempt)
    assert isinstance(result, Exhausted)
    assert sleeps == []
    assert result.next_wait_s == 300.0
    assert result.attempts == 1
