"""The status summary: today's numbers, saved by beat's count pass and read by `status` and the
status page (docs/retention.md §7). One row per scope; the payload is plain JSON that
`ops.summary` builds and reads back."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from worker.store.sql import Reader, Sql

TODAY = "today"


@dataclass(frozen=True)
class SummaryRow:
    line_days: dict[str, Any]
    counts: list[Any]
    unmarked_due: dict[str, Any]
    latency: list[Any]
    counted_at: dt.datetime
    seconds: float


SAVE_SUMMARY_SQL = Sql(
    """
            INSERT INTO status_summaries AS s
                (scope, line_days, counts, unmarked_due, latency, counted_at, seconds)
            VALUES (:scope, :line_days, :counts, :unmarked_due, :latency, :counted_at, :seconds)
            ON CONFLICT (scope) DO UPDATE SET
                line_days = EXCLUDED.line_days, counts = EXCLUDED.counts,
                unmarked_due = EXCLUDED.unmarked_due, latency = EXCLUDED.latency,
                counted_at = EXCLUDED.counted_at, seconds = EXCLUDED.seconds
            -- Two passes racing: the later count wins, whichever commits last.
            WHERE s.counted_at <= EXCLUDED.counted_at
            """
)


def save_summary(session: Reader, row: SummaryRow, scope: str = TODAY) -> None:
    session.execute(
        SAVE_SUMMARY_SQL,
        {
            "scope": scope,
            # Jsonb: psycopg sends these as jsonb, whoever runs the statement.
            "line_days": Jsonb(row.line_days),
            "counts": Jsonb(row.counts),
            "unmarked_due": Jsonb(row.unmarked_due),
            "latency": Jsonb(row.latency),
            "counted_at": row.counted_at,
            "seconds": row.seconds,
        },
    )


LOAD_SUMMARY_SQL = Sql(
    """
            SELECT line_days, counts, unmarked_due, latency, counted_at, seconds
            FROM status_summaries WHERE scope = :scope
            """
)


def load_summary(session: Reader, scope: str = TODAY) -> SummaryRow | None:
    r = session.execute(LOAD_SUMMARY_SQL, {"scope": scope}).one_or_none()
    if r is None:
        return None
    return SummaryRow(r.line_days, r.counts, r.unmarked_due, r.latency, r.counted_at, float(r.seconds))
