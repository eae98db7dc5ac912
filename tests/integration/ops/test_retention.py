"""Retention by day: beat's maintenance creates the coming days' partitions and drops the days past
CARDSHARE_RETENTION_DAYS; today's rows are untouched, missed days are still counted at the
boundary, and `check`, `status` and `history` say when a day is past retention."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.support.cli import cardshare
from tests.support.sweeps import Collector, sweep
from tests.support.world import World
from worker.config import Settings
from worker.deps import Deps
from worker.keys import PARTITIONS_LOCK
from worker.ops.check import run_check
from worker.ops.retention import run_maintenance
from worker.rules.retention import AHEAD_DAYS, BEHIND_DAYS, wanted_days
from worker.store import partitions
from worker.store.session import transaction

D = dt.timedelta(days=1)
RETENTION = 3


def engine_of(deps: Deps) -> Engine:
    engine: Engine = deps.sessions.kw["bind"]
    return engine


def at(deps: Deps, day: dt.date, *, retention: int = RETENTION) -> Deps:
    """`deps` on a clock at noon UTC of `day`, keeping `retention` days."""
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    return dataclasses.replace(
        deps, clock=lambda: noon, settings=deps.settings.replace(retention_days=retention)
    )


def make_days(deps: Deps, days: Iterable[dt.date]) -> None:
    for day in days:
        with transaction(deps.sessions) as s:
            partitions.create_day(s, day, lock_key=PARTITIONS_LOCK)


def align_days(deps: Deps, today: dt.date) -> None:
    """The daily partitions a fresh install makes today (today-2 .. today+7), whatever day the
    session's template was migrated on: a run that crosses midnight UTC shifts them by one."""
    wanted = set(wanted_days(today))
    with partitions.maintenance_connection(engine_of(deps)) as conn:
        for table in (partitions.ATTEMPTS, partitions.SHARE_DAYS):  # attempts reference share_days
            for part in partitions.partitions(conn, table):
                if part.bounds.lo not in wanted:
                    partitions.drop(conn, part)
    make_days(deps, sorted(wanted))


@pytest.fixture(autouse=True)
def days_of_today(deps: Deps, today: dt.date) -> None:
    align_days(deps, today)


def test_a_template_migrated_yesterday_is_aligned_to_today(deps: Deps, today: dt.date) -> None:
    make_days(deps, [today - (BEHIND_DAYS + 1) * D])
    with partitions.maintenance_connection(engine_of(deps)) as conn:
        for table in (partitions.ATTEMPTS, partitions.SHARE_DAYS):
            part = partitions.partition_of(conn, table, today + AHEAD_DAYS * D)
            assert part is not None
            partitions.drop(conn, part)
    align_days(deps, today)
    assert tables(deps) == {
        partitions.partition_name(table, day) for day in wanted_days(today) for table in partitions.TABLES
    }


def seed(deps: Deps, chats: list[uuid.UUID], day: dt.date, status: str = "succeeded") -> None:
    """One chat-day per chat on `day`, each with one attempt."""
    with transaction(deps.sessions) as s:
        for chat in chats:
            token = uuid.uuid4()
            s.execute(
                text(
                    "INSERT INTO share_days (chat_id, day, status, lease_until, claim_token, attempts, "
                    "claims) VALUES (:c, :d, :s, now() - interval '1 hour', :t, 1, 1)"
                ),
                {"c": chat, "d": day, "s": status, "t": token},
            )
            s.execute(
                text(
                    "INSERT INTO attempts (chat_id, day, attempt_no, claim_token, started_at, outcome, "
                    "http_status) VALUES (:c, :d, 1, :t, now(), 'ok', 204)"
                ),
                {"c": chat, "d": day, "t": token},
            )


def rows(deps: Deps, table: str, where: str = "true") -> list[tuple[Any, ...]]:
    with transaction(deps.sessions) as s:
        return [tuple(r) for r in s.execute(text(f"SELECT * FROM {table} WHERE {where} ORDER BY 1, 2, 3"))]


def tables(deps: Deps) -> set[str]:
    with transaction(deps.sessions) as s:
        found = s.execute(
            text("SELECT relname FROM pg_class WHERE relname ~ '^(share_days|attempts)_(p[0-9]{8}|legacy)$'")
        )
        return {str(n) for n in found.scalars()}


def test_a_day_past_retention_is_gone_and_the_kept_days_are_untouched(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    chats = [world.chat() for _ in range(4)]
    history = [today - n * D for n in range(12, BEHIND_DAYS, -1)]  # the template has today-2 onward
    make_days(deps, history)
    for day in [*history, today - 2 * D, today - D]:
        seed(deps, chats, day)
    seed(deps, chats[:2], today, status="queued")
    kept_from = today - (RETENTION + BEHIND_DAYS) * D  # today-5: the oldest partition left
    kept_before = {t: rows(deps, t, f"day >= '{kept_from}'") for t in ("share_days", "attempts")}
    assert len(kept_before["share_days"]) == 5 * 4 + 2

    report = run_maintenance(at(deps, today), engine_of(deps))

    assert report.errors == []
    gone = [today - n * D for n in range(12, RETENTION + BEHIND_DAYS, -1)]  # today-12 .. today-6
    assert sorted(report.dropped) == sorted(
        f"{table}_p{day:%Y%m%d}" for day in gone for table in ("share_days", "attempts")
    )
    left = tables(deps)
    assert not {f"share_days_p{day:%Y%m%d}" for day in gone} & left
    assert f"share_days_p{kept_from:%Y%m%d}" in left
    for table in ("share_days", "attempts"):
        assert rows(deps, table, f"day < '{kept_from}'") == []
        assert rows(deps, table, f"day >= '{kept_from}'") == kept_before[table]
    # A second pass finds nothing more to do.
    again = run_maintenance(at(deps, today), engine_of(deps))
    assert (again.dropped, again.created, again.errors) == ([], [], [])


def test_maintenance_makes_the_coming_week_and_the_sweep_the_next_days(
    world: World, deps: Deps, today: dt.date
) -> None:
    later = today + 3 * D
    report = run_maintenance(at(deps, later), engine_of(deps))
    assert report.created == [later + n * D for n in range(AHEAD_DAYS - 3 + 1, AHEAD_DAYS + 1)]
    assert f"attempts_p{later + AHEAD_DAYS * D:%Y%m%d}" in tables(deps)
    # Beat's maintenance stopped and tomorrow's partitions are gone: the sweep makes them again.
    tomorrow = today + D
    with partitions.maintenance_connection(engine_of(deps)) as conn:
        for table in ("attempts", "share_days"):
            part = partitions.partition_of(conn, table, tomorrow)
            assert part is not None
            partitions.drop(conn, part)
    world.line()
    world.chat()
    sweep(deps, Collector())
    assert {f"share_days_p{tomorrow:%Y%m%d}", f"attempts_p{tomorrow:%Y%m%d}"} <= tables(deps)


def test_missed_days_are_still_counted_at_the_retention_boundary(
    world: World, deps: Deps, today: dt.date
) -> None:
    """With one day kept, yesterday is the oldest kept day: its chat-days left open still end as
    missed (day_over) and `check` counts them; today's work goes on untouched."""
    world.line()
    missed, shared, due_today = world.chat(), world.chat(), world.chat()
    seed(deps, [missed], today - D, status="queued")
    seed(deps, [shared], today - D)
    seed(deps, [missed, shared, due_today], today - 2 * D)  # past retention with one day kept
    short = at(deps, today, retention=1)
    short = dataclasses.replace(short, clock=lambda: dt.datetime.now(dt.UTC))
    assert run_maintenance(short, engine_of(deps)).errors == []
    publish = Collector()
    sweep(short, publish)
    assert sorted(publish.ids) == sorted([missed, shared, due_today])
    with deps.sessions() as s:
        report = run_check(s, today - D, deps.policy, now=dt.datetime.now(dt.UTC))
    assert report.missed == [missed]
    assert report.succeeded == 1
    assert dict(report.failed) == {"day_over": 1}


def test_the_legacy_partition_goes_when_its_last_day_does(world: World, deps: Deps, today: dt.date) -> None:
    """The pre-partitioning tables (one range each, FROM MINVALUE) stay until every day in them
    is past retention, then go in one drop; the daily partitions after them stay."""
    world.line()
    chats = [world.chat() for _ in range(3)]
    first_daily = today - BEHIND_DAYS * D
    with transaction(deps.sessions) as s:
        for table in ("share_days", "attempts"):
            s.execute(text(f"CREATE TABLE {table}_legacy (LIKE {table} INCLUDING ALL)"))
        s.execute(
            text(
                "ALTER TABLE attempts_legacy ADD FOREIGN KEY (chat_id, day) "
                "REFERENCES share_days_legacy (chat_id, day) ON DELETE CASCADE"
            )
        )
        for table in ("share_days", "attempts"):
            s.execute(
                text(
                    f"ALTER TABLE {table} ATTACH PARTITION {table}_legacy "
                    f"FOR VALUES FROM (MINVALUE) TO ('{first_daily}')"
                )
            )
    for day in (first_daily - 40 * D, first_daily - D):
        seed(deps, chats, day)
    seed(deps, chats, today)
    # The legacy's last day (first_daily - 1) is kept on the first clock, past the margin on the next.
    keeps = today + (RETENTION - 1) * D
    report = run_maintenance(at(deps, keeps), engine_of(deps))
    assert not [name for name in report.dropped if "legacy" in name]
    assert len(rows(deps, "share_days", f"day < '{first_daily}'")) == 6
    report = run_maintenance(at(deps, keeps + D), engine_of(deps))
    assert {"attempts_legacy", "share_days_legacy"} <= set(report.dropped)
    assert not {"attempts_legacy", "share_days_legacy"} & tables(deps)
    assert rows(deps, "share_days", f"day < '{first_daily}'") == []
    assert len(rows(deps, "share_days", f"day = '{today}'")) == 3


def test_audit_events_and_sweep_runs_keep_their_own_retention(deps: Deps, today: dt.date) -> None:
    with transaction(deps.sessions) as s:
        for age in (400, 366, 364, 10, 0):
            s.execute(
                text(
                    "INSERT INTO audit_events (at, actor, action, chat_ref, outcome) "
                    "VALUES (now() - make_interval(days => :age), 'cli', 'share', :ref, 'refused')"
                ),
                {"age": age, "ref": f"age-{age}"},
            )
        for age in (10, 3, 0):
            s.execute(
                text(
                    "INSERT INTO sweep_runs (kind, day, started_at) VALUES ('sweep', CAST(:d AS date), now())"
                ),
                {"d": today - age * D},
            )
    live = dataclasses.replace(at(deps, today), clock=lambda: dt.datetime.now(dt.UTC))
    report = run_maintenance(live, engine_of(deps))
    assert (report.audit_deleted, report.runs_deleted) == (2, 1)
    with transaction(deps.sessions) as s:
        refs = sorted(s.execute(text("SELECT chat_ref FROM audit_events")).scalars())
        assert refs == ["age-0", "age-10", "age-364"]
        assert s.execute(text("SELECT count(*) FROM sweep_runs")).scalar_one() == 2


def test_check_status_and_history_say_a_day_is_past_retention(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    world.line()
    chat = world.chat()
    with transaction(deps.sessions) as s:
        s.execute(text("UPDATE chats SET created_at = now() - interval '30 days' WHERE id = :c"), {"c": chat})
    seed(deps, [chat], today - D)
    seed(deps, [chat], today - 2 * D)
    old = today - 2 * D
    for command in ("check", "status"):
        done = cardshare(settings, command, "--day", old.isoformat(), CARDSHARE_RETENTION_DAYS="1")
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"cardshare: --day {old} is past retention: CARDSHARE_RETENTION_DAYS=1 keeps "
            f"{today - D} to {today}, and older days' chat-days and attempts are dropped"
        )
    # The oldest kept day still checks.
    kept = cardshare(settings, "check", "--day", (today - D).isoformat(), CARDSHARE_RETENTION_DAYS="1")
    assert kept.returncode == 0, kept.stderr
    assert f"day {today - D}: due 1, succeeded 1" in kept.stdout
    # history shows the kept days only, and says the older ones are gone rather than missing.
    story = cardshare(settings, "history", str(chat), CARDSHARE_RETENTION_DAYS="1")
    assert story.returncode == 0, story.stderr
    assert f"{today - D}: succeeded" in story.stdout
    assert f"{old}:" not in story.stdout
    assert (
        f"days before {today - D} are past retention (CARDSHARE_RETENTION_DAYS=1): "
        "their chat-days and attempts are dropped"
    ) in story.stdout
    doc = json.loads(cardshare(settings, "history", str(chat), "--json", CARDSHARE_RETENTION_DAYS="1").stdout)
    assert [d["day"] for d in doc["days"]] == [(today - D).isoformat()]
    assert doc["truncated_before"] == (today - D).isoformat()
    # Within retention nothing is said.
    wide = cardshare(settings, "history", str(chat), "--days", "2", CARDSHARE_RETENTION_DAYS="1")
    assert "past retention" not in wide.stdout


def test_beat_runs_maintenance_hourly_on_the_control_queue() -> None:
    import worker.queue.tasks  # noqa: F401 - registers the tasks
    from worker.queue.app import app

    assert "cardshare.maintain" in app.tasks
    entry = app.conf.beat_schedule["maintain"]
    assert entry["task"] == "cardshare.maintain"
    assert entry["schedule"] == dt.timedelta(hours=1)
    assert entry["options"]["queue"] == "cardshare.control"


def test_db_maintain_through_the_cli_drops_the_old_days_and_makes_the_coming_ones(
    world: World, deps: Deps, settings: Settings, today: dt.date
) -> None:
    """`cardshare db maintain`, the operator's way to apply a lowered retention at once."""
    world.line()
    chat = world.chat()
    old = today - (1 + BEHIND_DAYS + 3) * D  # past CARDSHARE_RETENTION_DAYS=1 and the margin
    make_days(deps, [old])
    seed(deps, [chat], old)
    seed(deps, [chat], today)
    with partitions.maintenance_connection(engine_of(deps)) as conn:
        # The test database was made with the week ahead: drop its last day so the command makes it.
        for table in ("attempts", "share_days"):
            part = partitions.partition_of(conn, table, today + AHEAD_DAYS * D)
            if part is not None:
                partitions.drop(conn, part)
    done = cardshare(settings, "db", "maintain", CARDSHARE_RETENTION_DAYS="1")
    assert done.returncode == 0, done.stderr
    assert f"partitions created for {today + AHEAD_DAYS * D}" in done.stdout
    assert f"share_days_p{old:%Y%m%d}" in done.stdout
    assert f"attempts_p{old:%Y%m%d}" in done.stdout
    assert not {f"share_days_p{old:%Y%m%d}", f"attempts_p{old:%Y%m%d}"} & tables(deps)
    assert {f"share_days_p{today + AHEAD_DAYS * D:%Y%m%d}"} <= tables(deps)
    assert rows(deps, "share_days", f"day = '{old}'") == []
    assert len(rows(deps, "share_days", f"day = '{today}'")) == 1
    again = cardshare(settings, "db", "maintain", CARDSHARE_RETENTION_DAYS="1")
    assert again.returncode == 0, again.stderr
    assert "partitions created for none; dropped none" in again.stdout
