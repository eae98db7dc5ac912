"""Scale benchmark: what each command costs as the chats and the history grow (issue 17).

python -m bench.scale [--sizes A=100000x1,B=1000000x10,C=1000000x30] [--e2e-shares 20000]
                      [--sweep-chats 1000000] [--baseline-ref REF] [--runs 3] [--quick]

Datasets, built once per invocation in the real schema (migrations, day partitions) on one
embedded PostgreSQL, each in its own database: NAME=CHATSxDAYS chats on 10 lines, every chat due
today, and DAYS days of chat-days with one attempt each (90 % shared, 5 % skipped, 3 % failed,
2 % unknown on past days), today's all finished; one audit event per chat. Rows are generated
inside PostgreSQL (generate_series), each day into a new table that is then attached, with
wal_level=minimal for the build only; every table is vacuumed and analyzed before measuring.

Each run then measures, for every dataset, through the real `cardshare` command against the
running servers: `status`, the status page's `/` and `/status.json`, `check --day TODAY`,
`history CHAT`, `recover` with nothing to do, a sweep with nothing due, and a sweep with every
chat due (today's partitions emptied first); each with its wall time, the PostgreSQL CPU
(postmaster and backends) and the WAL it wrote. On the B dataset, right after its all-due sweep
marked every chat ("mid-day": a day's partition just filled), real workers share --e2e-shares of
them against the simulator; the same on an empty database (--e2e-shares due chats) in the same
run: the shares/s and PostgreSQL ms per share of the two are the share path's degradation with
history. Also per run: the sweep's enqueue rate at --sweep-chats due chats on an empty history,
and with --baseline-ref the same sweep by the code at that git ref (the tables before
partitioning) against its own schema; and each command's start-up (bench/startup_probe.py:
from the process's first line of Python to its first PostgreSQL connection). After each run
today's rows are rebuilt, so run 3 measures what run 1 did.

Reported: every figure as median (min-max, spread) over the runs, the growth ratios B/A and C/B,
table sizes per day of history and the projected size of a year at 1M chats a day under the
default retention. `--quick` uses small sizes to check the harness (results/scale.quick.json).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench import repeat
from bench.common import (
    API_KEY,
    Servers,
    bench_settings,
    configure_celery,
    partition_name,
    retention_policy,
    seed_due_chats,
    servers,
    simulator,
    table,
    worker_command,
)
from bench.e2e import db_stats, reset_stats, start_workers, stop, sustained

ROOT = Path(__file__).resolve().parents[1]
CARDSHARE = str(Path(sys.executable).parent / "cardshare")
LINES = [f"+1212555{n:04d}" for n in range(100, 110)]
QUICK_SIZES = "A=2000x1,B=20000x3,C=20000x6"
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Size:
    name: str
    chats: int
    days: int

    @property
    def db(self) -> str:
        return f"scale_{self.name.lower()}"


def parse_sizes(text: str) -> list[Size]:
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"(\w+)=(\d+)x(\d+)", part.strip())
        if m is None:
            raise SystemExit(f"--sizes: {part!r} is not NAME=CHATSxDAYS")
        out.append(Size(m.group(1), int(m.group(2)), int(m.group(3))))
    return out


def dsn_of(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# --------------------------------------------------------------------------- building


def create_database(srv: Servers, name: str) -> str:
    with psycopg.connect(srv.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return srv.postgres.url(name)


def seed_chats(conn: psycopg.Connection[Any], chats: int) -> None:
    conn.execute(
        "INSERT INTO lines (phone_number, first_name, card_active, card_checked_at) "
        "SELECT unnest(%s::text[]), 'Bench', true, now()",
        (LINES,),
    )
    conn.execute(
        """
        INSERT INTO chats (id, line_phone, service, is_group, first_outbound_at, last_outbound_at)
        SELECT gen_random_uuid(), (%s::text[])[1 + i %% %s], 'iMessage', false,
               now() - interval '60 days', now() - interval '1 hour'
        FROM generate_series(1, %s) i
        """,
        (LINES, len(LINES), chats),
    )


def seed_history_extras(conn: psycopg.Connection[Any], days: int) -> None:
    """One audit event per chat over the history, and the sweep runs of every day (96 a day)."""
    conn.execute(
        "INSERT INTO audit_events (at, actor, action, chat_ref, outcome, detail) "
        "SELECT now() - random() * make_interval(days => %s), 'cli', 'share', id::text, 'refused', "
        "'chat is not due: already_shared' FROM chats",
        (days,),
    )
    conn.execute(
        "INSERT INTO sweep_runs (kind, day, started_at, finished_at, scanned, enqueued) "
        "SELECT 'sweep', (now() - s * interval '15 minutes')::date, now() - s * interval '15 minutes', "
        "now() - s * interval '15 minutes' + interval '20 seconds', 1000, 0 "
        "FROM generate_series(1, %s) s",
        (96 * days,),
    )


# A finished chat-day per chat: its status from a byte of the chat id (salted by the day).
FILL_SHARE_DAYS = """
    INSERT INTO {sd} (chat_id, day, status, reason, lease_until, claim_token, attempts, claims,
                      enqueues, task_id, created_at, claimed_at, finished_at, updated_at)
    SELECT id, %(day)s, status,
           CASE status WHEN 'skipped' THEN 'card_inactive (HTTP 404/2012)'
                       WHEN 'failed' THEN 'permanent (HTTP 400/1002): bad request'
                       WHEN 'unknown' THEN 'unknown after 4 attempt(s)' END,
           t + interval '3 seconds', gen_random_uuid(), 1, 1, 1, 'bench', t, t + interval '1 second',
           CASE WHEN status <> 'unknown' THEN t + interval '2 seconds' END, t + interval '2 seconds'
    FROM (
        SELECT id,
               %(start)s::timestamptz
                 + ((get_byte(uuid_send(id), 2) * 256 + get_byte(uuid_send(id), 3)) %% %(span)s)
                   * interval '1 second' AS t,
               CASE WHEN k < 90 THEN 'succeeded' WHEN k < 95 THEN 'skipped'
                    WHEN k < %(failed_below)s THEN 'failed' ELSE 'unknown' END AS status
        FROM (SELECT id, (get_byte(uuid_send(id), 0) + %(salt)s) %% 100 AS k FROM chats) c
    ) x
"""
FILL_ATTEMPTS = """
    INSERT INTO {at} (chat_id, day, attempt_no, claim_token, started_at, finished_at, outcome,
                      http_status, linq_code, trace_id, task_id)
    SELECT chat_id, day, 1, claim_token, claimed_at, claimed_at + interval '200 milliseconds',
           CASE status WHEN 'succeeded' THEN 'ok' WHEN 'unknown' THEN 'unknown' ELSE 'fatal' END,
           CASE status WHEN 'succeeded' THEN 204 WHEN 'skipped' THEN 404 WHEN 'failed' THEN 400 END,
           CASE status WHEN 'skipped' THEN 2012 WHEN 'failed' THEN 1002 END,
           md5(chat_id::text || day::text), 'bench'
    FROM {sd}
"""


def fill_day(conn: psycopg.Connection[Any], day: dt.date, today: dt.date) -> None:
    """Replace `day`'s partitions with one finished chat-day (and its attempt) per chat: new
    tables filled first and attached after, as the partition manager attaches (the attach
    builds the indexes in bulk). Today's chat-days are all final (nothing for recovery)."""
    sd, at = partition_name("share_days", day), partition_name("attempts", day)
    lo, hi = day.isoformat(), (day + DAY).isoformat()
    like = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE"
    with conn.transaction():
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        for parent, name in (("attempts", at), ("share_days", sd)):
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
            if exists and exists[0]:
                conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {name}")
                conn.execute(f"DROP TABLE {name}")
        if day == today:
            start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            params = {"day": day, "start": start, "span": 3000, "failed_below": 100, "salt": day.toordinal()}
        else:
            start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
            params = {"day": day, "start": start, "span": 65536, "failed_below": 98, "salt": day.toordinal()}
        conn.execute(f"CREATE TABLE {sd} (LIKE share_days {like})")
        conn.execute(FILL_SHARE_DAYS.format(sd=sd), params)
        conn.execute(f"ALTER TABLE share_days ATTACH PARTITION {sd} FOR VALUES FROM ('{lo}') TO ('{hi}')")
        conn.execute(f"CREATE TABLE {at} (LIKE attempts {like})")
        conn.execute(FILL_ATTEMPTS.format(at=at, sd=sd))
        conn.execute(
            f"ALTER TABLE {at} ADD CONSTRAINT fk_{at}_share_days FOREIGN KEY (chat_id, day) "
            f"REFERENCES {sd} (chat_id, day) ON DELETE CASCADE"
        )
        conn.execute(f"ALTER TABLE attempts ATTACH PARTITION {at} FOR VALUES FROM ('{lo}') TO ('{hi}')")
        if day == today:
            # As the day's sweeps leave it: every chat noted as marked today (chats.marked_day).
            conn.execute("UPDATE chats SET marked_day = %s WHERE marked_day < %s", (day, day))
    conn.execute(f"VACUUM (ANALYZE) {sd}")
    conn.execute(f"VACUUM (ANALYZE) {at}")
    if day == today:
        conn.execute("VACUUM (ANALYZE) chats")


def empty_today(conn: psycopg.Connection[Any], today: dt.date) -> None:
    """Today as before its first sweep: no chat-days, and no chat noted as marked today (else
    the sweep skips every chat: a second run's all-due sweep enqueued nothing)."""
    sd, at = partition_name("share_days", today), partition_name("attempts", today)
    conn.execute(f"TRUNCATE {at}, {sd}")
    conn.execute("UPDATE chats SET marked_day = %s WHERE marked_day >= %s", (today - DAY, today))
    conn.execute("VACUUM (ANALYZE) chats")


def build(srv: Servers, size: Size, today: dt.date) -> dict[str, Any]:
    started = time.monotonic()
    url = create_database(srv, size.db)
    srv.migrate(url)
    with psycopg.connect(dsn_of(url), autocommit=True) as conn:
        seed_chats(conn, size.chats)
        seed_history_extras(conn, size.days)
        for n in range(size.days - 1, -1, -1):
            fill_day(conn, today - n * DAY, today)
        for name in ("lines", "chats", "audit_events", "sweep_runs"):
            conn.execute(f"VACUUM (ANALYZE) {name}")
    seconds = time.monotonic() - started
    print(f"built {size.name}: {size.chats:,} chats x {size.days} days in {seconds:.0f} s", flush=True)
    return {"chats": size.chats, "days": size.days, "build_s": round(seconds, 1)}


def build_empty(srv: Servers, name: str, chats: int) -> str:
    url = create_database(srv, name)
    srv.migrate(url)
    with psycopg.connect(dsn_of(url), autocommit=True) as conn:
        seed_chats(conn, chats)
        conn.execute("VACUUM (ANALYZE) chats")
    return url


# --------------------------------------------------------------------------- measuring


class Probe:
    """PostgreSQL's CPU (postmaster and every backend, exited ones included) and WAL position."""

    def __init__(self, srv: Servers) -> None:
        self.srv = srv
        self.conn = psycopg.connect(srv.dsn, autocommit=True)

    def lsn(self) -> int:
        row = self.conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
        assert row is not None
        return int(row[0])

    def pg_cpu(self) -> float:
        return repeat.tree_seconds([self.srv.postgres_pid()])


@contextlib.contextmanager
def measured(run: repeat.Run, name: str, probe: Probe) -> Iterator[dict[str, Any]]:
    """Wall time, PostgreSQL CPU and WAL bytes of the block, in the run's window `name`."""
    out: dict[str, Any] = {}
    lsn, cpu = probe.lsn(), probe.pg_cpu()
    started = time.monotonic()
    with run.measure(name):
        yield out
    out["wall_s"] = round(time.monotonic() - started, 3)
    out["pg_cpu_s"] = round(probe.pg_cpu() - cpu, 3)
    out["wal_bytes"] = probe.lsn() - lsn


def cli_env(srv: Servers, url: str, sim_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_"))}
    env.update(
        DATABASE_URL=url,
        REDIS_URL=srv.redis.url,
        LINQ_API_V3_API_KEY=API_KEY,
        LINQ_API_V3_BASE_URL=sim_url,
        CARDSHARE_LOG_LEVEL="WARNING",
        CARDSHARE_DATA_DIR=str(srv.root / "data"),
        # Unpaced, as every throughput benchmark here: at 60 shares a minute per line the all-due
        # sweep would hold nearly every chat-day instead of enqueueing it.
        CARDSHARE_LINE_SHARES_PER_MINUTE="0",
        CARDSHARE_AT_RISK_SHARES_PER_MINUTE="0",
        **extra,
    )
    return env


def cli(env: dict[str, str], *args: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(
        [CARDSHARE, *args], env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode not in ok:
        raise RuntimeError(f"cardshare {' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def status_page(env: dict[str, str]) -> Iterator[str]:
    proc = subprocess.Popen(
        [CARDSHARE, "web", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://\S+?)/?\s*$", line.strip()) or re.search(r"(http://\S+)", line)
        if m is None:
            raise RuntimeError(f"cardshare web said {line!r}: {proc.stderr.read() if proc.stderr else ''}")
        base = m.group(1).rstrip("/")
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "status page did not come up"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def sweep_seconds(stdout: str) -> float:
    """The sweep's own duration, from its one line (`... in 126.3s`)."""
    m = re.search(r" in ([\d.]+)s\s*$", stdout.strip())
    if m is None:
        raise RuntimeError(f"no duration in {stdout!r}")
    return float(m.group(1))


def enqueued(stdout: str) -> int:
    m = re.search(r"enqueued (\d+)", stdout)
    return int(m.group(1)) if m else -1


def measure_commands(
    run: repeat.Run, probe: Probe, srv: Servers, size: Size, url: str, sim: Any, today: dt.date
) -> dict[str, Any]:
    """Every command of issue 17's table on one dataset; today is left all marked 'queued'."""
    env = cli_env(srv, url, sim.base_url)
    with psycopg.connect(dsn_of(url), autocommit=True) as conn:
        row = conn.execute("SELECT id FROM chats ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        chat = str(row[0])
    tag = size.name
    fig: dict[str, Any] = {}
    # Beat's count pass (every CARDSHARE_STATUS_COUNTS_INTERVAL) saves today's counts; `status`
    # and the page read what it saved, as in service (bench/reads.py measures both sides too).
    with measured(run, f"{tag}.count", probe) as fig["count"]:
        cli(env, "count")
    with measured(run, f"{tag}.status", probe) as fig["status"]:
        cli(env, "status", "--json")
    with status_page(env) as base:
        for path, name in (("/", "page"), ("/status.json", "status_json")):
            with measured(run, f"{tag}.{name}", probe) as fig[name]:
                answer = httpx.get(base + path, timeout=600)
            assert answer.status_code == 200, answer.text[:300]
    with measured(run, f"{tag}.check", probe) as fig["check"]:
        cli(env, "check", "--day", today.isoformat(), ok=(0, 1))
    with measured(run, f"{tag}.history", probe) as fig["history"]:
        cli(env, "history", chat)
    with measured(run, f"{tag}.recover_nothing", probe) as fig["recover_nothing"]:
        cli(env, "recover")
    with measured(run, f"{tag}.sweep_nothing_due", probe) as fig["sweep_nothing_due"]:
        out = cli(env, "sweep")
    fig["sweep_nothing_due"]["enqueued"] = enqueued(out)
    with psycopg.connect(dsn_of(url), autocommit=True) as conn:
        empty_today(conn, today)
    redis.Redis.from_url(srv.redis.url).flushall()
    with measured(run, f"{tag}.sweep_all_due", probe) as fig["sweep_all_due"]:
        out = cli(env, "sweep")
    sweep = fig["sweep_all_due"]
    sweep["enqueued"] = enqueued(out)
    sweep["sweep_s"] = sweep_seconds(out)
    sweep["per_s"] = round(sweep["enqueued"] / max(sweep["sweep_s"], 1e-9))
    return fig


def startup(env: dict[str, str], chat: str, repeats: int = 3) -> dict[str, Any]:
    """Per command: the process's wall time and, in it, the time to its first PostgreSQL
    connection (median of `repeats`)."""
    out: dict[str, Any] = {}
    commands = {
        "status": ["status", "--json"],
        "history": ["history", chat],
        "share": ["share", chat],  # enqueues it (or refuses it): either way after its first queries
        "recover": ["recover"],
        "health": ["health"],  # no worker runs: it fails, quickly; it never opens PostgreSQL
    }
    for name, args in commands.items():
        walls, firsts = [], []
        for _ in range(repeats):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "bench.startup_probe", *args],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            walls.append(time.monotonic() - started)
            m = re.search(r"STARTUP first_connect_s=(-?[\d.]+)", done.stderr)
            if m is not None and float(m.group(1)) >= 0:
                firsts.append(float(m.group(1)))
        out[name] = {"wall_s": round(sorted(walls)[len(walls) // 2], 3)}
        if firsts:
            out[name]["first_connect_s"] = round(sorted(firsts)[len(firsts) // 2], 3)
    return out


# --------------------------------------------------------------------------- end to end


def e2e(
    run: repeat.Run,
    probe: Probe,
    srv: Servers,
    sim: Any,
    url: str,
    name: str,
    first_ids: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Workers share the first `--e2e-shares` chats of the queue a sweep just filled."""
    settings = bench_settings(
        database_url=url,
        redis_url=srv.redis.url,
        linq_base_url=sim.base_url,
        worker_concurrency=args.concurrency,
        worker_pool="threads",
        log_level="WARNING",
    )
    app = configure_celery(settings)
    sim.admin.reset()
    sim.admin.add_cards([{"phone_number": p, "first_name": "Bench", "is_active": True} for p in LINES])
    messages = [{"is_from_me": True, "sent_at": "2026-01-01T00:00:00+00:00"}]
    for i in range(0, len(first_ids), 5000):
        chunk = first_ids[i : i + 5000]
        sim.admin.add_chats(
            [{"id": c, "line": LINES[0], "service": "iMessage", "messages": messages} for c in chunk]
        )
    sim.admin.add_faults([{"path": "/share_contact_card$", "mode": "pass", "latency_ms": args.latency_ms}])
    # The sweep queued every due chat (a million on B) in its own order, and the simulator knows
    # only `first_ids`: workers would spend the run on 404s for the rest. The database keeps the
    # sweep's state (every chat-day queued); the queue holds just the chats to share, by id.
    from worker.keys import SHARE_QUEUE
    from worker.queue.publish import Publisher

    redis.Redis.from_url(srv.redis.url).delete(SHARE_QUEUE)
    with Publisher(app) as publish:
        publish([uuid.UUID(c) for c in first_ids], utc_today())
    env = {**os.environ, **settings.to_env(), "CARDSHARE_LOG_FORMAT": "json"}
    workers = start_workers(
        worker_command(pool="threads", concurrency=args.concurrency, loglevel="WARNING"), args.workers, env
    )
    target = args.e2e_shares
    try:
        deadline = time.monotonic() + 120
        while len(app.control.ping(timeout=0.5)) < args.workers:
            assert time.monotonic() < deadline, "workers did not start"
        reset_stats(dsn_of(url))
        pids = [w.pid for w in workers]
        with measured(run, name, probe) as out:
            workers_before = repeat.tree_seconds(pids)
            start = time.monotonic()
            samples: list[tuple[float, int]] = []
            while (n := len(sim.state.share_counts)) < target:
                samples.append((time.monotonic() - start, n))
                assert time.monotonic() - start < 1800, f"only {n} shared"
                time.sleep(0.25)
            samples.append((time.monotonic() - start, n))
            calls, ms = db_stats(dsn_of(url))
            workers_cpu = repeat.tree_seconds(pids) - workers_before
    finally:
        stop(workers)
    out.update(
        shares=n,
        per_s=round(sustained(samples, target), 1),
        db_statements_per_share=round(calls / n, 2),
        db_ms_per_share=round(ms / n, 3),
        workers_cpu_ms_per_share=round(1000 * workers_cpu / n, 3),
    )
    out["pg_cpu_ms_per_share"] = round(1000 * out["pg_cpu_s"] / n, 3)
    return out


# --------------------------------------------------------------------------- the sweep alone, old and new


def export_code(ref: str) -> Path:
    """The tree at `ref` in a temporary directory, its migrations where the package finds them."""
    target = Path(tempfile.mkdtemp(prefix="cardshare-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    shutil.copytree(target / "migrations", target / "worker" / "_migrations")
    return target


def sweep_db(srv: Servers, name: str, chats: int, code: Path) -> str:
    """A database migrated by the code in `code`, holding `chats` due chats."""
    url = create_database(srv, name)
    subprocess.run(
        [sys.executable, "-c", f"from worker import migrate; migrate.upgrade({url!r})"],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        check=True,
    )
    seed_due_chats(dsn_of(url), chats)
    return url


def sweep_alone(srv: Servers, url: str, chats: int, code: Path) -> dict[str, Any]:
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": srv.redis.url,
        "CARDSHARE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(code),
    }
    # Run from `code`, so `bench` and `worker` are both that tree's.
    done = subprocess.run(
        [sys.executable, "-m", "bench.sweep_child", "--mode", "cardshare", "--n", str(chats)],
        cwd=code,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sweep_child in {code} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    redis.Redis.from_url(srv.redis.url).flushall()
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- sizes


def sizes(url: str) -> dict[str, Any]:
    """Bytes per day of history (each day's partitions with their indexes), and the rest."""
    with psycopg.connect(dsn_of(url)) as conn:
        per_table: dict[str, Any] = {}
        for parent in ("share_days", "attempts"):
            rows = conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                (parent,),
            ).fetchall()
            filled = [(size, tuples) for _, size, tuples in rows if tuples > 0]
            total = sum(size for size, _ in filled)
            per_table[parent] = {
                "days": len(filled),
                "bytes": total,
                "bytes_per_day": round(total / max(len(filled), 1)),
                "bytes_per_row": round(total / max(sum(t for _, t in filled), 1), 1),
            }
        for name in ("chats", "audit_events"):
            row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (name,)).fetchone()
            assert row is not None
            per_table[name] = {"bytes": int(row[0])}
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        per_table["database_bytes"] = int(row[0])
    return per_table


def projection(size_b: dict[str, Any], chats: int, retention_days: int, behind: int) -> dict[str, Any]:
    """A year at 1M chats a day: what stays under retention, against keeping everything."""
    scale = 1_000_000 / chats
    per_day = (size_b["share_days"]["bytes_per_day"] + size_b["attempts"]["bytes_per_day"]) * scale
    kept_days = retention_days + 1 + behind
    fixed = size_b["chats"]["bytes"] * scale
    return {
        "bytes_per_day_at_1m": round(per_day),
        "kept_days": kept_days,
        "kept_bytes": round(per_day * kept_days + fixed),
        "year_without_retention_bytes": round(per_day * 365 + fixed),
        "chats_bytes_at_1m": round(fixed),
    }


def gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="A=100000x1,B=1000000x10,C=1000000x30")
    parser.add_argument("--e2e-on", default="B", help="dataset whose mid-day share path is measured")
    parser.add_argument("--e2e-shares", type=int, default=20000)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sweep-chats", type=int, default=1_000_000, help="0: no sweep-alone comparison")
    parser.add_argument("--baseline-ref", default=None, help="git ref of the code before partitioning")
    repeat.add_arguments(parser, quick={"sizes": QUICK_SIZES, "e2e_shares": 1000, "sweep_chats": 20000})
    args = repeat.parse(parser)
    scales = parse_sizes(args.sizes)
    bench = repeat.Bench("scale", args)
    baseline = export_code(args.baseline_ref) if args.baseline_ref else None
    retention_days, behind = retention_policy()
    try:
        with servers(stat_statements=True) as srv, simulator() as sim:
            bench.track(srv.pids)
            today = utc_today()
            srv.postgres.configure(wal_level="minimal", max_wal_senders="0")
            srv.postgres.start()
            datasets = {s.name: build(srv, s, today) for s in scales}
            empty_url = build_empty(srv, "scale_empty", args.e2e_shares)
            sweep_urls: dict[str, str] = {}
            if args.sweep_chats:
                sweep_urls["cardshare"] = sweep_db(srv, "sweep_new", args.sweep_chats, ROOT)
                if baseline is not None:
                    sweep_urls["baseline"] = sweep_db(srv, "sweep_old", args.sweep_chats, baseline)
            srv.postgres.configure(wal_level="replica", max_wal_senders="10")
            srv.postgres.start()
            urls = {s.name: srv.postgres.url(s.db) for s in scales}
            for s in scales:
                datasets[s.name]["sizes"] = sizes(urls[s.name])
            bench.machine["datasets"] = datasets
            widest = max(scales, key=lambda x: (x.chats, x.days))
            bench.machine["projection"] = projection(
                datasets[widest.name]["sizes"], widest.chats, retention_days, behind
            )
            bench.machine["baseline_ref"] = args.baseline_ref
            sim.admin.add_cards(
                [{"phone_number": p, "first_name": "Bench", "is_active": True} for p in LINES]
            )
            probe = Probe(srv)
            for run in bench.runs():
                if utc_today() != today:
                    raise SystemExit("the UTC day changed during the benchmark: run it again")
                for s in scales:
                    sim.admin.reset()
                    sim.admin.add_cards(
                        [{"phone_number": p, "first_name": "Bench", "is_active": True} for p in LINES]
                    )
                    fig = measure_commands(run, probe, srv, s, urls[s.name], sim, today)
                    if s.name == args.e2e_on:
                        with psycopg.connect(dsn_of(urls[s.name])) as conn:
                            first = [
                                str(r[0])
                                for r in conn.execute(
                                    "SELECT id FROM chats ORDER BY id LIMIT %s", (args.e2e_shares + 10_000,)
                                )
                            ]
                        fig["e2e_midday"] = e2e(
                            run, probe, srv, sim, urls[s.name], f"{s.name}.e2e", first, args
                        )
                        env = cli_env(srv, urls[s.name], sim.base_url)
                        fig["startup"] = startup(env, first[0])
                    redis.Redis.from_url(srv.redis.url).flushall()
                    with psycopg.connect(dsn_of(urls[s.name]), autocommit=True) as conn:
                        fill_day(conn, today, today)
                    run.figures[s.name] = fig
                    print(
                        f"{s.name}: status {fig['status']['wall_s']} s, page {fig['page']['wall_s']} s, "
                        f"check {fig['check']['wall_s']} s, sweep all due {fig['sweep_all_due']['per_s']}/s",
                        flush=True,
                    )
                # The empty database: its due chats swept, then the same workers share them.
                with psycopg.connect(dsn_of(empty_url), autocommit=True) as conn:
                    conn.execute("TRUNCATE attempts, share_days")
                    # Else a second run's sweep skips every chat its first run marked today.
                    conn.execute("UPDATE chats SET marked_day = '1970-01-01' WHERE marked_day > '1970-01-01'")
                sim.admin.reset()
                sim.admin.add_cards(
                    [{"phone_number": p, "first_name": "Bench", "is_active": True} for p in LINES]
                )
                cli(cli_env(srv, empty_url, sim.base_url), "sweep")
                with psycopg.connect(dsn_of(empty_url)) as conn:
                    ids = [str(r[0]) for r in conn.execute("SELECT id FROM chats ORDER BY id")]
                run.figures["empty"] = {"e2e": e2e(run, probe, srv, sim, empty_url, "empty.e2e", ids, args)}
                redis.Redis.from_url(srv.redis.url).flushall()
                for who, url in sweep_urls.items():
                    code = ROOT if who == "cardshare" else baseline
                    assert code is not None
                    with measured(run, f"sweep_alone.{who}", probe) as fig:
                        fig.update(sweep_alone(srv, url, args.sweep_chats, code))
                    run.figures.setdefault("sweep_alone", {})[who] = fig
                ratios(run.figures, scales)
            bench.machine.update(srv.versions())
    finally:
        if baseline is not None:
            shutil.rmtree(baseline, ignore_errors=True)
    saved = bench.finish()
    report(bench, scales, args, retention_days, behind)
    print(f"\nsaved {saved}")


RATIO_FIGURES = ("wall_s", "pg_cpu_s", "wal_bytes")
COMMANDS = (
    "count",
    "status",
    "page",
    "status_json",
    "check",
    "history",
    "recover_nothing",
    "sweep_nothing_due",
    "sweep_all_due",
)


def ratios(figures: dict[str, Any], scales: list[Size]) -> None:
    """Growth of each command's cost from one dataset to the next (B/A, C/B), within the run."""
    for lo, hi in itertools.pairwise(scales):
        key = f"{hi.name}/{lo.name}"
        out: dict[str, Any] = {}
        for command in COMMANDS:
            a, b = figures[lo.name][command], figures[hi.name][command]
            out[command] = {f: round(b[f] / a[f], 2) for f in RATIO_FIGURES if a.get(f) and f in b}
        figures.setdefault("growth", {})[key] = out
    empty = figures.get("empty", {}).get("e2e")
    for s in scales:
        mid = figures[s.name].get("e2e_midday")
        if mid and empty:
            figures["e2e_vs_empty"] = {
                "per_s": round(mid["per_s"] / empty["per_s"], 3),
                "db_ms_per_share": round(mid["db_ms_per_share"] / empty["db_ms_per_share"], 3),
                "pg_cpu_ms_per_share": round(mid["pg_cpu_ms_per_share"] / empty["pg_cpu_ms_per_share"], 3),
            }
    alone = figures.get("sweep_alone", {})
    if "cardshare" in alone and "baseline" in alone:
        figures["sweep_vs_baseline"] = round(alone["cardshare"]["per_s"] / alone["baseline"]["per_s"], 3)


def report(
    bench: repeat.Bench, scales: list[Size], args: argparse.Namespace, retention_days: int, behind: int
) -> None:
    c = bench.cell
    print(f"\nmedian (min-max, spread) of {args.runs} runs; wall s / PostgreSQL CPU s / WAL MB")
    rows = []
    for command in COMMANDS:
        row = [command]
        for s in scales:
            p = f"{s.name}.{command}."
            wal = bench.spread(p + "wal_bytes")
            row.append(
                f"{c(p + 'wall_s', 2)} / {c(p + 'pg_cpu_s', 2)} / "
                f"{'-' if wal is None else f'{wal.median / 1e6:,.1f}'}"
            )
        rows.append(row)
    print(table(["command", *(f"{s.name} ({s.chats:,} chats x {s.days} d)" for s in scales)], rows))
    growth = [k for k in (f"{hi.name}/{lo.name}" for lo, hi in itertools.pairwise(scales))]
    if growth:
        print("\ngrowth of wall time / PostgreSQL CPU")
        print(
            table(
                ["command", *growth],
                [
                    [
                        cmd,
                        *(
                            f"{c(f'growth.{g}.{cmd}.wall_s', 2)} / {c(f'growth.{g}.{cmd}.pg_cpu_s', 2)}"
                            for g in growth
                        ),
                    ]
                    for cmd in COMMANDS
                ],
            )
        )
    print("\nsweep with every chat due: enqueues/s")
    print(
        table(
            ["dataset", "enqueues/s", "sweep s"],
            [
                [s.name, c(f"{s.name}.sweep_all_due.per_s", 0), c(f"{s.name}.sweep_all_due.sweep_s", 1)]
                for s in scales
            ],
        )
    )
    if bench.spread("sweep_alone.cardshare.per_s"):
        print(
            f"sweep alone, {args.sweep_chats:,} due chats, empty history: "
            f"cardshare {c('sweep_alone.cardshare.per_s', 0)}/s"
            + (
                f", code at {args.baseline_ref} {c('sweep_alone.baseline.per_s', 0)}/s "
                f"(ratio {c('sweep_vs_baseline', 3)})"
                if bench.spread("sweep_alone.baseline.per_s")
                else ""
            )
        )
    if bench.spread("empty.e2e.per_s"):
        mid = f"{args.e2e_on}.e2e_midday."
        print(f"\nshare path, {args.e2e_shares:,} shares: {args.e2e_on} mid-day against an empty database")
        print(
            table(
                [
                    "database",
                    "shares/s",
                    "PostgreSQL ms/share (statements)",
                    "PostgreSQL CPU ms/share",
                    "statements/share",
                ],
                [
                    [
                        f"{args.e2e_on} mid-day",
                        c(mid + "per_s"),
                        c(mid + "db_ms_per_share", 3),
                        c(mid + "pg_cpu_ms_per_share", 3),
                        c(mid + "db_statements_per_share", 2),
                    ],
                    [
                        "empty",
                        c("empty.e2e.per_s"),
                        c("empty.e2e.db_ms_per_share", 3),
                        c("empty.e2e.pg_cpu_ms_per_share", 3),
                        c("empty.e2e.db_statements_per_share", 2),
                    ],
                    [
                        "ratio",
                        c("e2e_vs_empty.per_s", 3),
                        c("e2e_vs_empty.db_ms_per_share", 3),
                        c("e2e_vs_empty.pg_cpu_ms_per_share", 3),
                        "-",
                    ],
                ],
            )
        )
        print("\nstart-up: process wall s (first PostgreSQL connection after s)")
        print(
            table(
                ["command", "wall s", "first connection s"],
                [
                    [
                        cmd,
                        c(f"{args.e2e_on}.startup.{cmd}.wall_s", 3),
                        c(f"{args.e2e_on}.startup.{cmd}.first_connect_s", 3),
                    ]
                    for cmd in ("status", "history", "share", "recover", "health")
                ],
            )
        )
    datasets = bench.machine.get("datasets", {})
    print("\ntable sizes per day of history (partitions with their indexes)")
    print(
        table(
            [
                "dataset",
                "share_days / day",
                "attempts / day",
                "bytes / chat-day",
                "chats",
                "audit_events",
                "database",
            ],
            [
                [
                    name,
                    mb(d["sizes"]["share_days"]["bytes_per_day"]),
                    mb(d["sizes"]["attempts"]["bytes_per_day"]),
                    f"{d['sizes']['share_days']['bytes_per_row'] + d['sizes']['attempts']['bytes_per_row']:.0f}",  # noqa: E501
                    mb(d["sizes"]["chats"]["bytes"]),
                    mb(d["sizes"]["audit_events"]["bytes"]),
                    mb(d["sizes"]["database_bytes"]),
                ]
                for name, d in datasets.items()
            ],
        )
    )
    proj = bench.machine.get("projection")
    if proj:
        print(
            f"\na year at 1M chats a day: {gb(proj['bytes_per_day_at_1m'])} per day; "
            "under the default retention "
            f"({retention_days} days, {proj['kept_days']} days of partitions kept) {gb(proj['kept_bytes'])}, "
            f"against {gb(proj['year_without_retention_bytes'])} for the whole year without it "
            f"(chats {gb(proj['chats_bytes_at_1m'])} included in both)"
        )
    print(json.dumps({"noisy_runs": bench.noisy_runs}))


if __name__ == "__main__":
    main()
