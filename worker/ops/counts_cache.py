"""The status page's chat-day counts, read at most once per `max_age_s` (docs/retention.md §7).

Counting a day reads all of its chat-days: at a million a day that is seconds of PostgreSQL,
and every open page reloads every 30 s. So `cardshare web` keeps the last counts of each day it
was asked for: a load younger than `max_age_s` reuses them; an older one answers with them at
once (the page says "counts as of ...") and starts one refresh in the background, whatever the
number of loads. A day asked for the first time is counted before answering. Everything else on
the page (lines, holds, pace, warnings, the last sweep and failures, the queue, workers) is read
at every load, and `cardshare status` always counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from worker.ops.day_counts import DayCounts, read_day_counts
from worker.rules.cadence import Policy
from worker.store.session import read_only
from worker.store.sql import Reader

log = logging.getLogger("cardshare.status_page")

MAX_AGE_S = 15.0  # half the page's reload interval: two loads in a row see at most one refresh
MAX_DAYS = 16  # days (sets of line days) kept; the oldest asked for goes first

Key = tuple[tuple[tuple[str, dt.date], ...], tuple[tuple[str, dt.date], ...]]


@dataclass
class _Entry:
    counts: DayCounts
    counted_at: dt.datetime
    read_at: float  # the clock's reading when they were read


class CountsCache:
    """A `status.CountsReader` for one process; thread-safe (the page serves from a pool)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._refreshing: dict[Key, threading.Thread] = {}

    def __call__(
        self,
        s: Reader,
        wanted: Mapping[str, dt.date],
        current: Mapping[str, dt.date],
        now: dt.datetime,
        policy: Policy,
    ) -> tuple[DayCounts, dt.datetime]:
        key: Key = (tuple(sorted(wanted.items())), tuple(sorted(current.items())))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                if self.clock() - entry.read_at >= self.max_age_s and key not in self._refreshing:
                    thread = threading.Thread(
                        target=self._refresh,
                        args=(key, dict(wanted), dict(current), now, policy),
                        name="status-counts",
                        daemon=True,
                    )
                    self._refreshing[key] = thread
                    thread.start()
                return entry.counts, entry.counted_at
        counts = read_day_counts(s, wanted, current, now, policy)
        self._store(key, counts, now)
        return counts, now

    def wait(self, timeout: float | None = None) -> None:
        """Until the refreshes under way have finished (tests; shutting down)."""
        with self._lock:
            threads = list(self._refreshing.values())
        for thread in threads:
            thread.join(timeout)

    def _store(self, key: Key, counts: DayCounts, counted_at: dt.datetime) -> None:
        with self._lock:
            self._entries[key] = _Entry(counts, counted_at, self.clock())
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_DAYS:
                self._entries.popitem(last=False)

    def _refresh(
        self,
        key: Key,
        wanted: Mapping[str, dt.date],
        current: Mapping[str, dt.date],
        now: dt.datetime,
        policy: Policy,
    ) -> None:
        try:
            with read_only(self.sessions) as s:
                counts = read_day_counts(s, wanted, current, now, policy)
            self._store(key, counts, now)
        except Exception as exc:  # the page keeps the older counts and tries again next load
            log.warning(
                "status_page.counts_failed",
                extra={"event": "status_page.counts_failed", "fields": {"error": str(exc)[:200]}},
            )
        finally:
            with self._lock:
                self._refreshing.pop(key, None)
