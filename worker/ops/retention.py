"""Day partitions ahead, retention behind: beat's hourly maintenance (`cardshare db maintain`).

1. Every day from two days before today to a week after it gets its partitions of `share_days`
   and `attempts` (`rules.retention.wanted_days`); the sweep also makes sure of the next days
   itself, so a stopped beat does not stop the shares.
2. Partitions whose days are all past `CARDSHARE_RETENTION_DAYS` (plus the zone margin) are
   detached CONCURRENTLY and dropped, attempts first (each references its day's share_days).
   The cost is a catalog change and unlinking the day's files, whatever the other days hold.
3. `audit_events` older than `CARDSHARE_AUDIT_RETENTION_DAYS` and `sweep_runs` of days past
   retention are deleted in batches.

One pass at a time (an advisory lock); each step is retried by the next pass if it fails, and a
failure in one step does not stop the others (docs/retention.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from worker.deps import Deps
from worker.errors import StoreUnavailable
from worker.keys import MAINTAIN_LOCK, PARTITIONS_LOCK
from worker.logs import event
from worker.rules import retention as rules
from worker.rules.cadence import share_day
from worker.store import partitions as parts
from worker.store.locks import advisory_lock
from worker.store.session import transaction

log = logging.getLogger("cardshare.maintain")

AUDIT_BATCH = 10_000


@dataclass
class MaintenanceReport:
    today: dt.date
    ran: bool = True
    created: list[dt.date] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    audit_deleted: int = 0
    runs_deleted: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def one_line(self) -> str:
        if not self.ran:
            return "maintain: another maintenance pass is running; nothing done"
        created = ", ".join(d.isoformat() for d in self.created) or "none"
        dropped = ", ".join(self.dropped) or "none"
        text = (
            f"maintain {self.today}: partitions created for {created}; dropped {dropped}; "
            f"{self.audit_deleted} audit events and {self.runs_deleted} sweep runs deleted"
        )
        if self.errors:
            text += f"; {len(self.errors)} error(s): " + "; ".join(self.errors)
        return text + f" in {self.seconds:.1f}s"


def _describe(exc: BaseException) -> str:
    """The driver's one-line reason under StoreUnavailable and SQLAlchemy's wrappers."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    orig = getattr(root, "orig", None) or root
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def ensure_days(deps: Deps, days: list[dt.date]) -> list[dt.date]:
    """Create the partitions of each of `days` that no partition covers yet; returns those made.

    Cheap when there is nothing to do (one catalog read), so the sweep calls it every pass."""
    with transaction(deps.sessions) as s:
        share = [p.bounds for p in parts.partitions(s, parts.SHARE_DAYS)]
        attempts = [p.bounds for p in parts.partitions(s, parts.ATTEMPTS)]
    missing_share = set(rules.missing_days(days, share))
    missing_attempts = set(rules.missing_days(days, attempts))
    if missing_share != missing_attempts:
        lopsided = sorted(missing_share ^ missing_attempts)
        raise RuntimeError(
            "share_days and attempts disagree on which days have partitions: "
            + ", ".join(d.isoformat() for d in lopsided)
        )
    made = []
    for day in sorted(missing_share):
        # One transaction per day: a lock timeout on one leaves the others made.
        with transaction(deps.sessions) as s:
            created = parts.create_day(s, day, lock_key=PARTITIONS_LOCK)
        if created:
            made.append(day)
            event(log, "maintain.partition_created", day=day.isoformat())
    return made


def drop_expired(deps: Deps, engine: Engine, today: dt.date, report: MaintenanceReport) -> None:
    """Detach and drop every partition whose days are all past retention (attempts first)."""
    retention_days = deps.settings.retention_days
    with transaction(deps.sessions) as s:
        expired = [
            p
            for table in (parts.ATTEMPTS, parts.SHARE_DAYS)
            for p in parts.partitions(s, table)
            if rules.droppable(p.bounds, today, retention_days)
        ]
        leftovers = parts.leftovers(s)
    with parts.maintenance_connection(engine) as conn:
        for partition in expired:
            try:
                parts.drop(conn, partition)
            except sa_exc.DBAPIError as exc:
                report.errors.append(f"drop {partition.name}: {_describe(exc)}")
                continue
            report.dropped.append(partition.name)
            event(log, "maintain.partition_dropped", partition=partition.name)
        # Detached by a pass that died before its DROP: gone once past retention like the rest.
        for name in leftovers:
            day = _day_of(name)
            if day is not None and not rules.droppable(
                rules.Bounds(day, day + rules.DAY), today, retention_days
            ):
                continue
            try:
                parts.drop_leftover(conn, name)
            except sa_exc.DBAPIError as exc:
                report.errors.append(f"drop {name}: {_describe(exc)}")
                continue
            report.dropped.append(name)


def _day_of(name: str) -> dt.date | None:
    """The day in `share_days_p20260302`; None for a legacy table (only ever detached to drop)."""
    suffix = name.rsplit("_", 1)[1]
    if suffix == parts.LEGACY_SUFFIX:
        return None
    return dt.datetime.strptime(suffix[1:], "%Y%m%d").replace(tzinfo=dt.UTC).date()


def delete_old_rows(deps: Deps, now: dt.datetime, today: dt.date, report: MaintenanceReport) -> None:
    before = now - dt.timedelta(days=deps.settings.audit_retention_days)
    while True:
        with transaction(deps.sessions) as s:
            n = parts.delete_audit_before(s, before, limit=AUDIT_BATCH)
        report.audit_deleted += n
        if n < AUDIT_BATCH:
            break
    with transaction(deps.sessions) as s:
        report.runs_deleted = parts.delete_runs_before(
            s, rules.oldest_kept(today, deps.settings.retention_days)
        )


def run_maintenance(deps: Deps, engine: Engine) -> MaintenanceReport:
    """One pass: create the coming days, drop the days past retention, delete old audit rows."""
    started = time.monotonic()
    now = deps.clock()
    today = share_day(now, deps.settings.zone)
    report = MaintenanceReport(today)
    with advisory_lock(engine, MAINTAIN_LOCK) as got:
        if not got:
            report.ran = False
            return report
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("create", lambda: report.created.extend(ensure_days(deps, rules.wanted_days(today)))),
            ("retention", lambda: drop_expired(deps, engine, today, report)),
            ("audit", lambda: delete_old_rows(deps, now, today, report)),
        )
        for name, step in steps:
            try:
                step()
            except (StoreUnavailable, sa_exc.DBAPIError, RuntimeError) as exc:
                # A lock or statement timeout surfaces as StoreUnavailable too: the next pass retries.
                report.errors.append(f"{name}: {_describe(exc)}")
    report.seconds = time.monotonic() - started
    event(
        log,
        "maintain.finished",
        logging.WARNING if report.errors else logging.INFO,
        day=today.isoformat(),
        created=[d.isoformat() for d in report.created],
        dropped=report.dropped,
        audit_deleted=report.audit_deleted,
        runs_deleted=report.runs_deleted,
        errors=report.errors,
        seconds=round(report.seconds, 3),
    )
    return report
