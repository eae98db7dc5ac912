"""Issue 17 point 4: a sweep that finds nothing to do writes nothing (no WAL beyond its
`sweep_runs` row), and it does not read again the chats already marked for their line's today
(docs/decisions.md §17)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from sqlalchemy import text

from tests.support.sweeps import Collector, sweep
from tests.support.world import World
from worker.deps import Deps
from worker.rules.facts import ChatActivity
from worker.store.chats import record_activity
from worker.store.session import transaction
from worker.store.sweeps import finish_run, start_run

LINE = "+12225550111"
DUE = 300
TRIES = 3  # the least of a few runs: another database's autovacuum may write WAL meanwhile


def wal_bytes(deps: Deps, action: Callable[[], object]) -> int:
    """WAL the cluster wrote while `action` ran, the least of TRIES runs."""
    least = None
    for _ in range(TRIES):
        with deps.sessions() as s:
            before = s.execute(text("SELECT pg_current_wal_lsn()")).scalar_one()
        action()
        with deps.sessions() as s:
            written = int(
                s.execute(
                    text("SELECT pg_current_wal_lsn() - CAST(:b AS pg_lsn)"), {"b": before}
                ).scalar_one()
            )
        least = written if least is None else min(least, written)
    assert least is not None
    return least


def test_an_idle_sweep_writes_no_wal_beyond_its_run_row(world: World, deps: Deps, today: dt.date) -> None:
    world.line(LINE)
    when = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    due = [ChatActivity(uuid.uuid4(), LINE, service="iMessage", outbound_at=when) for _ in range(DUE)]
    not_due = [
        ChatActivity(uuid.uuid4(), LINE, service="SMS", outbound_at=when),
        ChatActivity(uuid.uuid4(), LINE, service="iMessage", outbound_at=when - dt.timedelta(days=60)),
    ]
    with transaction(deps.sessions) as s:
        record_activity(s, due + not_due)
    first = Collector()
    report = sweep(deps, first)
    assert report.enqueued == DUE
    with transaction(deps.sessions) as s:  # some finish, as the day goes on
        s.execute(
            text("UPDATE share_days SET status = 'succeeded', finished_at = now() WHERE chat_id = ANY(:c)"),
            {"c": [a.chat_id for a in due[: DUE // 2]]},
        )

    def run_row() -> None:
        with transaction(deps.sessions) as s:
            run_id = start_run(s, "sweep", today)
        with transaction(deps.sessions) as s:
            finish_run(s, run_id, scanned=0, enqueued=0, error=None)

    idle_reports = []

    def idle() -> None:
        publish = Collector()
        idle_reports.append(sweep(deps, publish))
        assert publish.ids == []

    baseline = wal_bytes(deps, run_row)
    idle_wal = wal_bytes(deps, idle)
    print(f"run row alone: {baseline} B of WAL; idle sweep: {idle_wal} B")
    # Nothing read again: every due chat was marked today by the first sweep.
    assert all(r.scanned == 0 and r.enqueued == 0 and r.requeued == 0 for r in idle_reports)
    # The same WAL as the run row's two statements alone (before issue 17 point 4: 736 B against
    # 320 B here, the lines' card and reputation rows rewritten by every sweep). A little slack
    # for WAL another database's background work may write in the least quiet of the runs.
    assert idle_wal <= baseline + 64, (
        f"an idle sweep wrote {idle_wal} B of WAL; its run row alone {baseline} B"
    )
