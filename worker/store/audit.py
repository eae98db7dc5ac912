"""`audit_events`: operator and ingestion actions that are not HTTP attempts (a refused manual
share, an import). Read back by `cardshare history` (`reports.chat_audit`)."""

from __future__ import annotations

from worker.store.sql import Reader, Sql

AUDIT_SQL = Sql(
    "INSERT INTO audit_events (actor, action, chat_ref, outcome, detail) "
    "VALUES (:actor, :action, :chat, :outcome, :detail)"
)


def audit(
    session: Reader, *, actor: str, action: str, chat_ref: str | None, outcome: str, detail: str | None
) -> None:
    session.execute(
        AUDIT_SQL,
        {"actor": actor, "action": action, "chat": chat_ref, "outcome": outcome, "detail": detail},
    )
