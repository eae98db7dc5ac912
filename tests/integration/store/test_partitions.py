"""The day partitions seen from the share path: three statements per share, each reading only
today's partitions, and the partitions' own bookkeeping."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from tests.support.world import World
from worker.deps import Deps
from worker.keys import PARTITIONS_LOCK
from worker.rules.retention import Bounds
from worker.sharing.share import Outcome, share_chat
from worker.store import hot, partitions, shares, sweeps
from worker.store.session import transaction

D = dt.timedelta(days=1)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement this process sends through psycopg while the test runs."""
    sent: list[str] = []
    real = psycopg.Cursor.execute

    def counting(self: psycopg.Cursor[Any], query: Any, *args: Any, **kw: Any) -> Any:
        sent.append(str(query))
        return real(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    return sent


def test_a_share_is_three_statements(world: World, deps: Deps, today: dt.date, statements: list[str]) -> None:
    world.line()
    chat = world.chat()
    statements.clear()
    assert share_chat(chat, today, deps).outcome is Outcome.SHARED
    assert len(statements) == 3, statements
    assert "FROM chats c" in statements[0]
    assert "INSERT INTO share_days" in statements[1]
    assert "UPDATE attempts" in statements[2]


def relations(plan: Any) -> set[str]:
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


def explain(deps: Deps, statement: Any, params: dict[str, Any]) -> set[str]:
    with hot.connect(deps.sessions.kw["bind"]) as conn:
        row = conn.execute(type(statement)("EXPLAIN (FORMAT JSON) " + statement.text), params).first()
    assert row is not None
    return relations(row[0])


def test_every_share_statement_reads_only_todays_partitions(world: World, deps: Deps, today: dt.date) -> None:
    """Statements that find a row by key name its day, so the planner opens that day's partition
    only, however many days are kept (an attempt by id alone would probe every day's index)."""
    with transaction(deps.sessions) as s:
        for day in (today - 5 * D, today - 4 * D, today - 3 * D):
            partitions.create_day(s, day, lock_key=PARTITIONS_LOCK)
    chat, token = uuid.uuid4(), uuid.uuid4()
    todays = {f"share_days_p{today:%Y%m%d}", f"attempts_p{today:%Y%m%d}"}
    key = {"chat_id": chat, "day": today, "token": token}
    finish = {
        **key,
        "attempt_id": 1,
        "outcome": "ok",
        "http_status": 204,
        "code": None,
        "error": None,
        "retry_after": None,
        "trace": None,
        "status": "succeeded",
        "reason": None,
        "delay": 0.0,
        "final": True,
        "confirmed": False,
    }
    cases = [
        (shares.LOAD_CHAT_SQL, {**key, "window": 300.0}, {"chats", "lines", "account_controls", *todays}),
        (shares.FINISH_SQL, finish, todays),
        (shares.BEGIN_ATTEMPT_SQL, {**key, "task_id": None}, {f"share_days_p{today:%Y%m%d}"}),
        (
            shares.FINISH_ATTEMPT_SQL,
            {k: finish[k] for k in ("outcome", "code", "error", "retry_after", "trace")}
            | {"id": 1, "day": today, "status": 204},
            {f"attempts_p{today:%Y%m%d}"},
        ),
        (
            shares.FINISH_DAY_SQL,
            {k: finish[k] for k in ("status", "reason", "delay", "final", "confirmed", *key)},
            {f"share_days_p{today:%Y%m%d}"},
        ),
        (shares.ADD_LOST_CLAIM_SQL, {"c": chat, "d": today, "t": token}, {f"share_days_p{today:%Y%m%d}"}),
    ]
    for statement, params, expected in cases:
        found = explain(deps, statement, params)
        # A write names its parent table (ModifyTable); what it scans are partitions.
        assert {r for r in found if partitions.is_partition_name(r)} == expected - {
            "chats",
            "lines",
            "account_controls",
        }
        assert found - expected <= {"share_days", "attempts"}, statement.text


def test_partitions_are_listed_with_their_ranges_and_made_once(deps: Deps, today: dt.date) -> None:
    later = today + 20 * D
    with transaction(deps.sessions) as s:
        assert partitions.create_day(s, later, lock_key=PARTITIONS_LOCK) is True
    with transaction(deps.sessions) as s:
        # Another process got there first: nothing to do, no error.
        assert partitions.create_day(s, later, lock_key=PARTITIONS_LOCK) is False
        for table in partitions.TABLES:
            part = partitions.partition_of(s, table, later)
            assert part is not None
            assert part.name == partitions.partition_name(table, later)
            assert part.bounds == Bounds(later, later + D)
            assert not part.detach_pending
        assert partitions.partition_of(s, partitions.SHARE_DAYS, later + D) is None


def test_partition_bounds_are_read_from_postgresql_s_own_text() -> None:
    assert partitions.parse_bounds("FOR VALUES FROM ('2026-03-05') TO ('2026-03-06')") == Bounds(
        dt.date(2026, 3, 5), dt.date(2026, 3, 6)
    )
    assert partitions.parse_bounds("FOR VALUES FROM (MINVALUE) TO ('2026-03-04')") == Bounds(
        None, dt.date(2026, 3, 4)
    )
    assert partitions.is_partition_name("attempts_p20260305")
    assert partitions.is_partition_name("share_days_legacy")
    assert not partitions.is_partition_name("share_days")
    assert not partitions.is_partition_name("chats_p20260305")
    with pytest.raises(ValueError, match="not a range partition bound"):
        partitions.parse_bounds("DEFAULT")


def test_recovery_statements_read_only_the_days_partition(deps: Deps, today: dt.date) -> None:
    """Recovery's keyset page and the poison pass name the day: whatever history is kept, they read
    that day's partition only (so a pass costs the day's open rows, not the history)."""
    with transaction(deps.sessions) as s:
        for day in (today - 5 * D, today - 4 * D, today - 3 * D):
            partitions.create_day(s, day, lock_key=PARTITIONS_LOCK)
    page = {
        "day": today,
        "limit": 1000,
        "qlease": 1800.0,
        "drained": True,
        "stale": 600.0,
        "max_lost": 3,
        "after_lease": sweeps.KEYSET_START[0],
        "after_chat": sweeps.KEYSET_START[1],
    }
    todays = {f"share_days_p{today:%Y%m%d}"}
    for statement, params in (
        (sweeps.REQUEUE_EXPIRED_SQL, page),
        (sweeps.FAIL_POISONED_SQL, {"days": [today], "max_lost": 3}),
    ):
        found = explain(deps, statement, params)
        assert {r for r in found if partitions.is_partition_name(r)} == todays, statement.text
        assert found - todays <= {"share_days"}, statement.text
