"""How fast the card follows the first outbound message: per day, p50 and p99 of the seconds from
the outbound message that made a chat-day due (`share_days.outbound_at`) to Linq's 2xx for its
share (`finished_at` of a succeeded day, recorded right after the answer), over the days'
successes with a known outbound time; a day a 429 confirmed is left out (docs/decisions.md §17).

It reads only the asked days' partitions, and in them only succeeded rows: a cost in proportion
to those days' shares, not to the history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from worker.store.sql import Reader, Sql

FIRST_OUTBOUND_SQL = Sql(
    """
            SELECT day, count(*) AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99
            FROM (
                SELECT day, EXTRACT(EPOCH FROM finished_at - outbound_at)::float8 AS s
                FROM share_days
                WHERE day = ANY(:days) AND status = 'succeeded' AND NOT confirmed_by_rate_limit
                  AND outbound_at IS NOT NULL AND finished_at IS NOT NULL
            ) t
            GROUP BY day
            ORDER BY day
            """
)


@dataclass(frozen=True)
class DayLatency:
    day: dt.date
    shares: int  # successes with a known first outbound time
    p50_s: float
    p99_s: float


def first_outbound_latency(session: Reader, days: Iterable[dt.date]) -> list[DayLatency]:
    wanted = sorted(set(days))
    if not wanted:
        return []
    rows = session.execute(FIRST_OUTBOUND_SQL, {"days": wanted}).all()
    return [DayLatency(r.day, int(r.n), float(r.p50), float(r.p99)) for r in rows]
