"""What `status`, the status page and `check` cost as the history grows (issue 17, point 3).

python -m bench.reads [--chats 1000000] [--days 10] [--runs 3] [--quick] [--explain]

Two databases on one embedded PostgreSQL, in the real schema (migrations, day partitions), with
the same chats (10 lines, every chat due today): `one` holds today only, `history` holds today
and --days - 1 earlier days. Every day has one finished chat-day and one attempt per chat (90 %
shared, 5 % skipped, 3 % failed, 2 % unknown on past days; today all final). Rows are generated
inside PostgreSQL, each day into a new table attached as its partition (the dataset of
bench/scale.py's builders); every table is vacuumed and analyzed before measuring.

Each run measures, on both databases, through the real `cardshare` against the running servers:
`count` (beat's count pass, by hand), `status --json` (which reads what the pass saved), the
status page (one `cardshare web` per database: its first load of `/`, then `/` and
`/status.json` again; each reads the saved count and the rest), `status --json --live` (which
counts the day itself) and `check --day TODAY`; each with its wall time and the PostgreSQL CPU
(postmaster and backends). The baseline is `one` in the same run: the
ratio history/one is what the history costs a read (1.0 when reads follow today's work).
With --explain, the plan of each read statement on `history` (which partitions it opens, its
time) is printed once before the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import repeat
from bench.common import Servers, servers, table

# The history is built as bench.scale builds it: the same rows, so the two read the same days.
from bench.scale import LINES, cli, dsn_of, fill_day, seed_chats, status_page

ROOT = Path(__file__).resolve().parents[1]
CARDSHARE = str(Path(sys.executable).parent / "cardshare")
DAY = dt.timedelta(days=1)
COMMANDS = ("count", "status", "page_first", "page", "status_json", "status_live", "check")


# --------------------------------------------------------------------------- building


def create_database(srv: Servers, name: str) -> str:
    from worker import migrate

    with psycopg.connect(srv.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = srv.postgres.url(name)
    migrate.upgrade(url)
    return url


def build(srv: Servers, name: str, chats: int, days: int, today: dt.date) -> str:
    started = time.monotonic()
    url = create_database(srv, name)
    with psycopg.connect(dsn_of(url), autocommit=True) as conn:
        seed_chats(conn, chats)
        for n in range(days - 1, -1, -1):
            fill_day(conn, today - n * DAY, today)
        for t in ("lines", "chats", "share_days", "attempts"):
            conn.execute(f"VACUUM (ANALYZE) {t}")
    print(f"built {name}: {chats:,} chats x {days} days in {time.monotonic() - started:.0f} s", flush=True)
    return url


# --------------------------------------------------------------------------- measuring


class Probe:
    """PostgreSQL's CPU: the postmaster and every backend, exited ones included."""

    def __init__(self, srv: Servers) -> None:
        self.srv = srv

    def pg_cpu(self) -> float:
        return repeat.tree_seconds([self.srv.postgres_pid()])


@contextlib.contextmanager
def measured(run: repeat.Run, name: str, probe: Probe) -> Iterator[dict[str, Any]]:
    out: dict[str, Any] = {}
    cpu = probe.pg_cpu()
    started = time.monotonic()
    with run.measure(name):
        yield out
    out["wall_s"] = round(time.monotonic() - started, 4)
    out["pg_cpu_s"] = round(probe.pg_cpu() - cpu, 4)


def cli_env(srv: Servers, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))}
    env.update(
        DATABASE_URL=url,
        REDIS_URL=srv.redis.url,
        LINQ_API_V3_API_KEY="bench-key",
        CARDSHARE_LOG_LEVEL="WARNING",
        CARDSHARE_DATA_DIR=str(srv.root / "data"),
    )
    return env


def measure(
    run: repeat.Run, probe: Probe, srv: Servers, tag: str, url: str, today: dt.date
) -> dict[str, Any]:
    env = cli_env(srv, url)
    fig: dict[str, Any] = {}
    # Beat's count pass (what it costs every CARDSHARE_STATUS_COUNTS_INTERVAL), then the readers
    # of what it saved, within the three intervals they use it for (worker/ops/day_counts.py).
    with measured(run, f"{tag}.count", probe) as fig["count"]:
        cli(env, "count")
    with measured(run, f"{tag}.status", probe) as fig["status"]:
        out = cli(env, "status", "--json")
    assert '"counted_at"' in out, "status did not read the saved count"
    with status_page(env) as base:
        # Each load reads the saved count and everything else (lines, holds, failures) again.
        for path, name in (("/", "page_first"), ("/", "page"), ("/status.json", "status_json")):
            with measured(run, f"{tag}.{name}", probe) as fig[name]:
                answer = httpx.get(base + path, timeout=600)
            assert answer.status_code == 200, answer.text[:300]
    with measured(run, f"{tag}.status_live", probe) as fig["status_live"]:
        out = cli(env, "status", "--json", "--live")
    assert '"counted_at"' not in out, "status --live read the saved count"
    with measured(run, f"{tag}.check", probe) as fig["check"]:
        out = cli(env, "check", "--day", today.isoformat(), ok=(0, 1))
    fig["check"]["due"] = int(m.group(1)) if (m := re.search(r"due (\d+)", out)) else -1
    return fig


# --------------------------------------------------------------------------- the plans


def _opened(plan: Any) -> tuple[set[str], float]:
    """The relations a JSON plan scans, and its execution time (ms)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Relation Name" in node and node.get("Actual Loops", 1):
                found.add(node["Relation Name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan[0]["Plan"])
    return found, float(plan[0].get("Execution Time", 0.0))


def explain(url: str, today: dt.date) -> list[tuple[str, str, float]]:
    """(statement, partitions it opened, execution ms) for each read statement of status and
    check, by EXPLAIN ANALYZE of the statements the code sends, with today's parameters."""
    from zoneinfo import ZoneInfo

    from sqlalchemy import create_engine, text

    from worker.rules.cadence import Policy
    from worker.store import partitions, reports
    from worker.store.due import binds
    from worker.store.lines import line_days_params

    now = dt.datetime.now(dt.UTC)
    ld = line_days_params(dict.fromkeys(LINES, today))
    due = {**ld, **binds(now, Policy(zone=ZoneInfo("UTC")))}
    cases = [
        ("status: day_status_counts", reports.DAY_STATUS_COUNTS_SQL, {**ld, "days": [today]}),
        ("status: unmarked_due_by_line", reports.UNMARKED_DUE_BY_LINE_SQL, due),
        ("status: recent_failures", reports.RECENT_FAILURES_SQL, {"since": today - 7 * DAY, "limit": 20}),
        ("check: day_entry_groups", reports.DAY_ENTRY_GROUPS_SQL, {"d": today, "window": 300.0}),
        ("check: unmarked_due_facts", reports.UNMARKED_DUE_FACTS_SQL, due),
        ("check: repeated_with_success", reports.REPEATED_WITH_SUCCESS_SQL, {"d": today}),
    ]
    out = []
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for name, statement, params in cases:
                plan = conn.execute(
                    text("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.text), params
                ).scalar_one()
                found, ms = _opened(plan)
                days = sorted({r.rsplit("_p", 1)[1] for r in found if partitions.is_partition_name(r)})
                out.append((name, ", ".join(days) or "-", ms))
    finally:
        engine.dispose()
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chats", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--explain", action="store_true", help="print each read's plan on `history` once")
    repeat.add_arguments(parser, quick={"chats": 20000, "days": 5})
    args = repeat.parse(parser)
    if args.days < 2:
        parser.error("--days must be at least 2 (the baseline holds one)")
    bench = repeat.Bench("reads", args)
    today = dt.datetime.now(dt.UTC).date()
    with servers() as srv:
        bench.track(srv.pids)
        urls = {
            "one": build(srv, "reads_one", args.chats, 1, today),
            "history": build(srv, "reads_history", args.chats, args.days, today),
        }
        if args.explain:
            rows = explain(urls["history"], today)
            print(
                table(
                    ["statement on `history`", "days opened", "ms"],
                    [(n, p, f"{ms:.1f}") for n, p, ms in rows],
                )
            )
        probe = Probe(srv)
        for run in bench.runs():
            for tag, url in urls.items():
                run.figures[tag] = measure(run, probe, srv, tag, url, today)
            for name in COMMANDS:
                one, hist = run.figures["one"][name], run.figures["history"][name]
                ratio = run.figures.setdefault("ratio", {})[name] = {
                    "wall": round(hist["wall_s"] / max(one["wall_s"], 1e-9), 3)
                }
                if one["pg_cpu_s"] >= 0.02:  # PostgreSQL's CPU is read in 10 ms ticks
                    ratio["pg_cpu"] = round(hist["pg_cpu_s"] / one["pg_cpu_s"], 3)
        bench.machine.update(srv.versions())
    path = bench.finish()
    rows_out = []
    for name in COMMANDS:
        rows_out.append(
            (
                name,
                bench.cell(f"one.{name}.wall_s", 3),
                bench.cell(f"history.{name}.wall_s", 3),
                bench.cell(f"ratio.{name}.wall", 2),
                bench.cell(f"history.{name}.pg_cpu_s", 3),
                bench.cell(f"ratio.{name}.pg_cpu", 2),
            )
        )
    print(
        f"\n{args.chats:,} chats; `one` = today only, `history` = {args.days} days"
        + (" (QUICK sizes: checks the harness, not for publishing)" if args.quick else "")
    )
    print(
        table(
            ["read", "one wall s", "history wall s", "history/one", "history PG CPU s", "PG CPU history/one"],
            rows_out,
        )
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
