"""`status`, the status page and `check` read today's work, not the history (issue 17, point 3):
every statement they send opens only the partitions of the day it reports on (docs/retention.md
§7). The plans are PostgreSQL's own (EXPLAIN of the very statements and parameters sent), on a
database that holds rows on many earlier days, so a read that goes back to scanning every day
fails here, whatever its timing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from tests.support.world import World
from worker.deps import Deps
from worker.keys import PARTITIONS_LOCK
from worker.ops import status as status_mod
from worker.ops.check import run_check
from worker.sharing.share import Outcome, share_chat
from worker.store import partitions, reports
from worker.store.due import binds
from worker.store.lines import line_days_params
from worker.store.session import transaction

D = dt.timedelta(days=1)
HISTORY = (30, 20, 12, 9, 8, 3, 1)  # days before today that hold rows


def relations(plan: Any) -> set[str]:
    """Every relation a JSON plan names."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add(plan["Relation Name"])
        for value in plan.values():
            found |= relations(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= relations(value)
    return found


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every statement (and its parameters) this process sends through psycopg."""
    out: list[tuple[str, Any]] = []
    real = psycopg.Cursor.execute

    def recording(self: psycopg.Cursor[Any], query: Any, params: Any = None, *args: Any, **kw: Any) -> Any:
        out.append((str(query), params))
        return real(self, query, params, *args, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return out


@pytest.fixture
def history(world: World, deps: Deps, today: dt.date) -> list[uuid.UUID]:
    """Two lines' chats with a finished chat-day and an attempt on each day of HISTORY, and
    today's: one shared, one failed, one unmarked and due."""
    world.line()
    world.line("+12223335555")
    chats = [world.chat(), world.chat(), world.chat("+12223335555")]
    with transaction(deps.sessions) as s:
        for back in HISTORY:
            day = today - back * D
            partitions.create_day(s, day, lock_key=PARTITIONS_LOCK)
            for chat in chats:
                s.execute(
                    text(
                        "INSERT INTO share_days (chat_id, day, status, reason, lease_until, finished_at) "
                        "VALUES (:c, :d, 'failed', 'permanent (HTTP 400/1002)', now(), now())"
                    ),
                    {"c": chat, "d": day},
                )
                s.execute(
                    text(
                        "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, "
                        "finished_at, outcome, http_status) "
                        "VALUES (:c, :d, 1, gen_random_uuid(), now(), now(), 'fatal', 400)"
                    ),
                    {"c": chat, "d": day},
                )
    assert share_chat(chats[0], today, deps).outcome is Outcome.SHARED
    with transaction(deps.sessions) as s:
        s.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, reason, lease_until, finished_at) "
                "VALUES (:c, :d, 'failed', 'permanent (HTTP 400/1002)', now(), now())"
            ),
            {"c": chats[1], "d": today},
        )
    return chats


def plan_partitions(deps: Deps, query: str, params: Any) -> set[str]:
    """The partitions PostgreSQL's plan of `query` opens (plan-time pruning, as executed)."""
    url = deps.settings.database_url
    assert url is not None
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    return {r for r in relations(row[0]) if partitions.is_partition_name(r)}


def day_of(partition: str) -> dt.date:
    raw = partition.rsplit("_p", 1)[1]
    return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))


def test_status_and_check_read_only_the_days_they_report(
    history: list[uuid.UUID], deps: Deps, today: dt.date, sent: list[tuple[str, Any]]
) -> None:
    """Everything `status` (and so the page) and `check` send: the day's partitions only, and
    for the last failures the FAILURE_DAYS before it; never the older history."""
    now = dt.datetime.now(dt.UTC)
    sent.clear()
    st = status_mod.collect(
        deps.sessions, day=None, now=now, policy=deps.policy, redis_url=None, stall_s=60.0
    )
    with deps.sessions() as s:
        report = run_check(s, today, deps.policy, now=now)
    # The numbers are still today's: one shared, one failed, one due and not reached yet.
    assert (st.total.shared, st.total.failed_total, st.total.not_enqueued) == (1, 1, 1)
    assert (report.succeeded, sum(report.failed.values()), report.unseen_due) == (1, 1, [history[2]])
    oldest = today - status_mod.FAILURE_DAYS * D
    read = [(q, p) for q, p in sent if "share_days" in q or "attempts" in q]
    assert len(read) >= 5, [q for q, _ in read]
    for query, params in read:
        opened = plan_partitions(deps, query, params)
        assert opened, query
        assert min(day_of(p) for p in opened) >= oldest, (query, sorted(opened))
        if "coalesce(d.finished_at, d.updated_at) AS at" not in query:  # all but the last failures
            assert {day_of(p) for p in opened} == {today}, (query, sorted(opened))


def test_each_read_statement_opens_todays_partitions_only(
    history: list[uuid.UUID], deps: Deps, today: dt.date
) -> None:
    """Statement by statement, so a new caller of one of them is covered too."""
    now = dt.datetime.now(dt.UTC)
    ld = line_days_params({"+12223334444": today, "+12223335555": today})
    sd, at = f"share_days_p{today:%Y%m%d}", f"attempts_p{today:%Y%m%d}"
    due = {**ld, **binds(now, deps.policy)}
    cases = [
        (reports.DAY_STATUS_COUNTS_SQL, {**ld, "days": [today]}, {sd}),
        (reports.UNMARKED_DUE_BY_LINE_SQL, due, {sd}),
        (reports.UNMARKED_DUE_FACTS_SQL, due, {sd}),
        (reports.DAY_ENTRY_GROUPS_SQL, {"d": today, "window": 300.0}, {sd, at}),
        (reports.REPEATED_WITH_SUCCESS_SQL, {"d": today}, {at}),
        (reports.DAY_COUNTS_SQL, {"day": today}, {sd}),
        (reports.ATTEMPT_STATS_SQL, {"d": today}, {at}),
    ]
    engine = deps.sessions.kw["bind"]
    for statement, params, expected in cases:
        with engine.connect() as conn:
            row = conn.execute(text("EXPLAIN (FORMAT JSON) " + statement.text), params).first()
        assert row is not None
        opened = {r for r in relations(row[0]) if partitions.is_partition_name(r)}
        assert opened == expected, (statement.text, sorted(opened))
