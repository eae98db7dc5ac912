"""OneBehind: page tails run one at a time, in order, and an error in one stops the sweep."""

from __future__ import annotations

import threading
import time

import pytest

from worker.sharing.one_behind import OneBehind


def test_tails_run_in_order_one_at_a_time_and_report_their_results() -> None:
    order: list[int] = []
    running = threading.Lock()

    def tail(n: int) -> int:
        assert running.acquire(blocking=False), "two tails ran at once"
        try:
            time.sleep(0.01)
            order.append(n)
            return n * 10
        finally:
            running.release()

    results = []
    with OneBehind() as tails:
        for n in range(5):
            results.append(tails.submit(lambda n=n: tail(n)))  # type: ignore[misc]
        results.append(tails.drain())
    assert order == [0, 1, 2, 3, 4]
    assert results == [0, 0, 10, 20, 30, 40]  # each submit returns the previous tail's result
    assert tails.drain() == 0


def test_a_failed_tail_is_raised_at_the_next_submit_and_the_next_tail_never_runs() -> None:
    ran: list[str] = []

    def boom() -> int:
        raise RuntimeError("redis went away")

    with OneBehind() as tails:
        tails.submit(boom)
        with pytest.raises(RuntimeError, match="redis went away"):
            tails.submit(lambda: ran.append("next") or 1)  # type: ignore[func-returns-value]
    assert ran == []


def test_leaving_cleanly_raises_the_last_tails_error() -> None:
    def boom() -> int:
        raise ValueError("last page failed")

    with pytest.raises(ValueError, match="last page failed"), OneBehind() as tails:
        tails.submit(boom)


def test_leaving_on_an_error_lets_the_tail_in_flight_finish() -> None:
    finished = threading.Event()

    def slow() -> int:
        time.sleep(0.05)
        finished.set()
        return 1

    def sweep_that_fails() -> None:
        with OneBehind() as tails:
            tails.submit(slow)
            raise KeyError("the next page's read failed")

    with pytest.raises(KeyError):
        sweep_that_fails()
    assert finished.is_set()
