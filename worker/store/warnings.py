"""`account_warnings`: what Linq told us about the account that an operator must act on (an API
token expiring or expired, a webhook subscription disabled). Open until acknowledged, or until
a newer event about the same subject supersedes or resolves it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.store.sql import Reader, Sql

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SUPERSEDE_SQL = Sql(
    """
            UPDATE account_warnings SET resolved_at = now(), resolution = :resolution
            WHERE subject = :subject AND resolved_at IS NULL
            """
)
RAISE_SQL = Sql(
    """
            INSERT INTO account_warnings (kind, subject, summary, occurred_at, event_id)
            VALUES (:kind, :subject, :summary, :occurred_at, :event_id)
            RETURNING id
            """
)


def raise_warning(
    session: Session,
    *,
    kind: str,
    subject: str,
    summary: str,
    occurred_at: dt.datetime | None,
    event_id: str | None,
) -> int:
    """A new warning about `subject`; an open one about the same subject is superseded by it."""
    session.execute(SUPERSEDE_SQL, {"subject": subject, "resolution": f"superseded by {kind}"})
    row = session.execute(
        RAISE_SQL,
        {
            "kind": kind,
            "subject": subject,
            "summary": summary[:500],
            "occurred_at": occurred_at,
            "event_id": event_id,
        },
    )
    return int(row.scalar_one())


def resolve_warnings(session: Session, *, subject: str, resolution: str) -> int:
    """Linq says the subject is fine again (a subscription re-enabled): its warnings close."""
    result = session.execute(SUPERSEDE_SQL, {"subject": subject, "resolution": resolution})
    return int(getattr(result, "rowcount", 0))


ACK_SQL = Sql(
    """
            UPDATE account_warnings SET acknowledged_at = now(), acknowledged_by = :by
            WHERE (:all OR id = :id) AND acknowledged_at IS NULL AND resolved_at IS NULL
            """
)


def acknowledge(session: Session, *, warning_id: int | None, by: str) -> int:
    """Acknowledge one open warning (or every one, with None); how many were."""
    result = session.execute(ACK_SQL, {"all": warning_id is None, "id": warning_id or 0, "by": by})
    return int(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class WarningRow:
    id: int
    kind: str
    subject: str
    summary: str
    occurred_at: dt.datetime | None
    raised_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    resolved_at: dt.datetime | None
    resolution: str | None

    @property
    def open(self) -> bool:
        return self.acknowledged_at is None and self.resolved_at is None


WARNINGS_SQL = Sql(
    """
            SELECT id, kind, subject, summary, occurred_at, raised_at, acknowledged_at,
                   acknowledged_by, resolved_at, resolution
            FROM account_warnings
            WHERE :all OR (acknowledged_at IS NULL AND resolved_at IS NULL)
            ORDER BY raised_at DESC, id DESC
            LIMIT :limit
            """
)


def warnings(session: Reader, *, include_closed: bool = False, limit: int = 50) -> list[WarningRow]:
    rows = session.execute(WARNINGS_SQL, {"all": include_closed, "limit": limit}).all()
    return [WarningRow(*r) for r in rows]
