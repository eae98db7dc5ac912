"""Run each page's tail (publish, note) on one helper thread while the sweep reads the next page.

A sweep page is a read, a plan and a mark in PostgreSQL, then the publish to Redis and the
`marked_day` note. The tail of page N needs nothing from page N+1 and page N+1's read needs
nothing from page N's tail (its keyset starts after page N's last key whatever the note has
done), so the two overlap: while PostgreSQL works on one page, this process builds the other's
messages (bench/README.md §1). At most one tail runs at a time and each starts only after the
last one finished, so messages go out in page order, and a failed tail stops the sweep at the
next page.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType


class OneBehind:
    """Submit page tails; each `submit` first waits for the previous one (and re-raises its
    error). `drain` waits for the last and returns its result; leaving the context without an
    error drains too (raising a tail's error, dropping its result)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-tail")
        self._pending: Future[int] | None = None

    def submit(self, tail: Callable[[], int]) -> int:
        """Start `tail`; returns what the previous tail returned (0 if none)."""
        done = self.drain()
        self._pending = self._pool.submit(tail)
        return done

    def drain(self) -> int:
        """Wait for the tail in flight; what it returned (0 if none)."""
        pending, self._pending = self._pending, None
        return 0 if pending is None else pending.result()

    def __enter__(self) -> OneBehind:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A tail still running finishes (its publish is not cut in half); on the way out after
        # an error, its own result or error is dropped: the first error is the one raised.
        self._pool.shutdown(wait=True)
        if exc_type is None:
            self.drain()
