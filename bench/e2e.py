"""End-to-end benchmark: due chats to shares, through real workers and the simulator.

python -m bench.e2e [--chats 20000] [--latency-ms 200] [--workers 2] [--concurrency 100]
                    [--baseline-seconds 60] [--runs 3] [--quick] [--noisy-above 20]
                    [--events off|on|both] [--against CHECKOUT] [--profile DIR]

Each run starts from fresh state (tables emptied, chats re-seeded, Redis flushed, the simulator
reset) and measures both, so the ratio is per run:
cardshare: the sweep enqueues every due chat; N `celery worker` processes (threads pool) claim
and share them against the simulator, which holds each share for --latency-ms. The baseline
(bench/naive_app.py) runs on the same load for --baseline-seconds; its rate is steady-state.
DB statements and time per share come from pg_stat_statements; CPU per share of the workers,
PostgreSQL (backends included), Redis and this process (simulator, sweep) from their process
trees. A run whose other load on the box passed --noisy-above % is flagged NOISY.

--events both measures cardshare twice per run, Celery task events off and then on
(CARDSHARE_TASK_EVENTS: what Flower and celery-exporter read), each from fresh state, and
reports the ratio of the two in the same run (no consumer of the events is attached: their
cost to the workers, Redis and the sweep is what is measured).

--against CHECKOUT measures, in each run, workers importing CHECKOUT's `worker` package (e.g. a
`git worktree` of main) and then this checkout's, each from fresh state: a change's effect as a
ratio per run, which holds while the box's speed drifts between runs (a shared 2-core box
drifts by more than most single changes). --profile DIR records one worker with py-spy (GIL
samples, collapsed stacks) and PostgreSQL's costliest statements with their planning time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import repeat
from bench.common import (
    API_KEY,
    LINE,
    Servers,
    bench_settings,
    configure_celery,
    reset_state,
    seed_due_chats,
    servers,
    simulator,
    sweeper,
    table,
    worker_command,
)

LOG_DIR = Path(tempfile.gettempdir()) / "cardshare-bench-logs"


def start_workers(cmd: list[str], n: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """n worker processes; their output goes to LOG_DIR/worker-N.log for a post-mortem."""
    LOG_DIR.mkdir(exist_ok=True)
    procs = []
    for i in range(n):
        with (LOG_DIR / f"worker-{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [*cmd, "--hostname", f"bench{i}-{os.getpid()}@%h"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def succeeded(dsn: str | psycopg.Connection[Any]) -> int:
    """Shares done so far; pass a connection when polling (a new one per poll is a backend fork)."""
    if isinstance(dsn, str):
        with psycopg.connect(dsn, autocommit=True) as conn:
            return succeeded(conn)
    return int(dsn.execute("SELECT count(*) FROM share_days WHERE status = 'succeeded'").fetchone()[0])  # type: ignore[index]


def sessions_opened(dsn: str) -> int:
    """Connections PostgreSQL has accepted so far (each one forks a backend)."""
    with psycopg.connect(dsn) as conn:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def reset_stats(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def db_stats(dsn: str) -> tuple[int, float]:
    with psycopg.connect(dsn) as conn:
        calls, ms = conn.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query !~* 'pg_stat_statements|count\\(\\*\\) FROM share_days'"
        ).fetchone()  # type: ignore[misc]
    return int(calls), float(ms)


def latencies(dsn: str) -> dict[str, float]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - claimed_at)),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - claimed_at)),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
            FROM share_days WHERE status = 'succeeded'
            """
        ).fetchone()
    assert row is not None
    return {
        "run_p50_ms": round(row[0] * 1000, 1),
        "run_p99_ms": round(row[1] * 1000, 1),
        "e2e_p50_s": round(row[2], 2),
        "e2e_p99_s": round(row[3], 2),
    }


TOP_STATEMENTS = """
    SELECT calls, round(total_exec_time::numeric / greatest(calls, 1), 3) AS exec_ms,
           round(total_plan_time::numeric / greatest(calls, 1), 3) AS plan_ms,
           round((total_exec_time + total_plan_time)::numeric, 0) AS total_ms,
           regexp_replace(left(query, 160), '\\s+', ' ', 'g') AS query
    FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY total_exec_time + total_plan_time DESC LIMIT 12
"""


def top_statements(dsn: str) -> str:
    """The statements that cost PostgreSQL most in this run (for --profile)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(TOP_STATEMENTS).fetchall()
    return table(["calls", "exec ms", "plan ms", "total ms", "query"], [list(map(str, r)) for r in rows])


def start_profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on one worker, samples holding the GIL, as collapsed stacks (for --profile)."""
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--gil",
            "--nonblocking",
            "-r",
            "200",
            "-d",
            str(int(seconds)),
            "--format",
            "raw",
            "-o",
            str(out),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """User+system CPU so far of each group's process trees, with their reaped children (a
    PostgreSQL backend that exits is added to the postmaster's). "self" is this process alone:
    its children are the other groups."""
    return {
        group: repeat.own_seconds() if pids == [os.getpid()] else repeat.tree_seconds(pids)
        for group, pids in groups.items()
    }


def per_share(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {g: round(1000 * (after[g] - before[g]) / max(n, 1), 3) for g in before}


def sustained(samples: list[tuple[float, int]], total: int) -> float:
    """Shares/s between 10% and 90% of the total: the steady state, no ramp-up or tail."""
    lo = next(t for t, n in samples if n >= total * 0.1)
    hi = next(t for t, n in samples if n >= total * 0.9)
    return total * 0.8 / max(hi - lo, 1e-9)


def prepare_simulator(sim: Any, ids: list[str], latency_ms: int) -> None:
    """A fresh simulator: the line's active card, the chats, every share held latency_ms."""
    sim.admin.reset()
    sim.admin.add_cards([{"phone_number": LINE, "first_name": "Bench", "is_active": True}])
    sim.admin.add_chats(
        [
            {
                "id": i,
                "line": LINE,
                "service": "iMessage",
                "messages": [{"is_from_me": True, "sent_at": "2026-01-01T00:00:00+00:00"}],
            }
            for i in ids
        ]
    )
    sim.admin.add_faults([{"path": "/share_contact_card$", "mode": "pass", "latency_ms": latency_ms}])


def fresh_run(srv: Servers, sim: Any, args: argparse.Namespace) -> list[str]:
    """Empty tables and Redis, re-seed the due chats, reset the simulator; returns the chat ids."""
    reset_state(srv)
    seed_due_chats(srv.dsn, args.chats)
    with psycopg.connect(srv.dsn) as conn:
        ids = [str(r[0]) for r in conn.execute("SELECT id FROM chats")]
    prepare_simulator(sim, ids, args.latency_ms)
    return ids


def run_cardshare(
    srv: Servers,
    sim: Any,
    settings: Any,
    app: Any,
    args: argparse.Namespace,
    run: repeat.Run,
    window: str = "cardshare",
    code: str | None = None,
) -> dict[str, Any]:
    """`code`: a checkout whose `worker` package the workers import instead of this one's."""
    env = {**os.environ, **settings.to_env(), "CARDSHARE_LOG_FORMAT": "json"}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([code, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = worker_command(pool=args.pool, concurrency=args.concurrency, loglevel="WARNING")
    workers = start_workers(cmd, args.workers, env)
    try:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5)) < args.workers:
            assert time.monotonic() < deadline, "workers did not start"
        reset_stats(srv.dsn)
        # This process hosts the simulator (and runs the sweep): its CPU is mostly Linq's side.
        groups = {
            "workers": [w.pid for w in workers],
            "simulator+sweep": [os.getpid()],
            "postgres": [srv.postgres_pid()],
            "redis": [srv.redis_pid()],
        }
        with sweeper(settings, app) as sweep, psycopg.connect(srv.dsn, autocommit=True) as probe:
            opened_before = sessions_opened(srv.dsn)
            with run.measure(window):
                cpu_before = cpu_seconds(groups)
                start = time.monotonic()
                report = sweep()
                samples = []
                profiler = None
                while (n := succeeded(probe)) < args.chats:
                    samples.append((time.monotonic() - start, n))
                    assert time.monotonic() - start < 1800, f"only {n} shared"
                    if args.profile and profiler is None and n >= args.chats * 0.2:
                        out = Path(args.profile) / f"worker-{window}-{os.getpid()}-{len(run.figures)}.txt"
                        profiler = start_profile(workers[0].pid, out, args.profile_seconds)
                    time.sleep(0.25)
                if profiler is not None:
                    profiler.wait(60)
                samples.append((time.monotonic() - start, n))
                elapsed = time.monotonic() - start
                cpu_after = cpu_seconds(groups)
        # A pool that churns connections shows here (each one is a backend fork).
        opened = sessions_opened(srv.dsn) - opened_before
        calls, ms = db_stats(srv.dsn)
        if args.profile:
            (Path(args.profile) / f"pg-{window}.txt").write_text(top_statements(srv.dsn))
    finally:
        stop(workers)
    return {
        "shares": n,
        "enqueued": report.enqueued,
        "seconds": round(elapsed, 1),
        "per_s": round(sustained(samples, args.chats), 1),
        "overall_per_s": round(n / elapsed, 1),
        "db_statements_per_share": round(calls / n, 2),
        "db_ms_per_share": round(ms / n, 3),
        "db_connections_opened": opened,
        "simulator_accepted": sim.admin.shares()["total_accepted"],
        **latencies(srv.dsn),
        "cpu_ms_per_share": per_share(cpu_before, cpu_after, n),
    }


def run_baseline(
    srv: Servers, sim: Any, ids: list[str], args: argparse.Namespace, run: repeat.Run
) -> dict[str, Any]:
    """The naive app on the same chats, same simulator, same latency, for --baseline-seconds.
    Its rate counts only shares made inside that window (not those done while enqueueing)."""
    import datetime as dt

    from bench import naive_app

    with psycopg.connect(srv.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE share_days, attempts")
    prepare_simulator(sim, ids, args.latency_ms)
    env = {
        **os.environ,
        "DATABASE_URL": srv.database_url,
        "REDIS_URL": srv.redis.url,
        "LINQ_API_V3_API_KEY": API_KEY,
        "LINQ_API_V3_BASE_URL": sim.base_url,
    }
    naive_app.app.conf.broker_url = srv.redis.url
    day = dt.datetime.now(dt.UTC).date().isoformat()
    workers = start_workers(
        [sys.executable, "-m", "celery", "-A", "bench.naive_app", "worker", "--loglevel", "WARNING"], 1, env
    )
    try:
        deadline = time.monotonic() + 60
        while not naive_app.app.control.ping(timeout=0.5):
            assert time.monotonic() < deadline, "baseline worker did not start"
        reset_stats(srv.dsn)
        for chat_id in ids:
            naive_app.share.apply_async(args=(chat_id, day))
        groups = {
            "workers": [w.pid for w in workers],
            "simulator": [os.getpid()],
            "postgres": [srv.postgres_pid()],
            "redis": [srv.redis_pid()],
        }
        with psycopg.connect(srv.dsn, autocommit=True) as probe, run.measure("baseline"):
            cpu_before = cpu_seconds(groups)
            n0 = succeeded(probe)
            start = time.monotonic()
            time.sleep(args.baseline_seconds)
            n = succeeded(probe) - n0
            elapsed = time.monotonic() - start
            cpu_after = cpu_seconds(groups)
        calls, ms = db_stats(srv.dsn)
    finally:
        stop(workers)
    return {
        "shares": n,
        "seconds": round(elapsed, 1),
        "per_s": round(n / elapsed, 1),
        # pg_stat_statements counts from before the enqueue: statements per share over all done.
        "db_statements_per_share": round(calls / max(n + n0, 1), 2),
        "db_ms_per_share": round(ms / max(n + n0, 1), 3),
        "cpu_ms_per_share": per_share(cpu_before, cpu_after, n),
    }


def events_cost(off: dict[str, Any], on: dict[str, Any]) -> dict[str, float]:
    """Events on against off in the same run: throughput ratio and extra CPU per share."""
    cpu_off, cpu_on = off["cpu_ms_per_share"], on["cpu_ms_per_share"]
    return {
        "per_s_ratio": round(on["per_s"] / off["per_s"], 3) if off["per_s"] else 0.0,
        "workers_cpu_ratio": round(cpu_on["workers"] / cpu_off["workers"], 3) if cpu_off["workers"] else 0.0,
        "workers_cpu_extra_ms": round(cpu_on["workers"] - cpu_off["workers"], 3),
        "redis_cpu_extra_ms": round(cpu_on["redis"] - cpu_off["redis"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chats", type=int, default=20000)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--pool", choices=["threads", "gevent"], default="threads")
    parser.add_argument("--db-pool", type=int, default=None, help="default: --concurrency")
    parser.add_argument("--baseline-seconds", type=float, default=60, help="0: no baseline")
    parser.add_argument(
        "--events", choices=["off", "on", "both"], default="off", help="Celery task events (both: compare)"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy one worker (GIL samples, collapsed stacks) from 20%% of the shares on, and the "
        "top statements of pg_stat_statements, into DIR (a profiled run's figures are not for publishing)",
    )
    parser.add_argument("--profile-seconds", type=float, default=20)
    parser.add_argument(
        "--against",
        metavar="CHECKOUT",
        help="in each run, first measure workers running CHECKOUT's code (e.g. a `git worktree` of main), "
        "then this one's, and report the ratios per run",
    )
    repeat.add_arguments(parser, quick={"chats": 1500, "baseline_seconds": 10})
    args = repeat.parse(parser)
    bench = repeat.Bench("e2e", args)
    with servers(stat_statements=True, track_planning=bool(args.profile)) as srv, simulator() as sim:
        bench.track(srv.pids)
        settings = bench_settings(
            database_url=srv.database_url,
            redis_url=srv.redis.url,
            linq_base_url=sim.base_url,
            worker_concurrency=args.concurrency,
            worker_pool=args.pool,
            db_pool_size=args.db_pool,
            log_level="WARNING",
            task_events=args.events == "on",
        )
        app = configure_celery(settings)
        for run in bench.runs():
            ids = fresh_run(srv, sim, args)
            if args.against:
                # The other code first, then this one, each from fresh state: a pair per run, so
                # the ratio holds even while the box's speed drifts between runs.
                theirs = run_cardshare(srv, sim, settings, app, args, run, "against", code=args.against)
                run.figures["against"] = theirs
                cpu = theirs["cpu_ms_per_share"]["workers"]
                print(f"against: {theirs['per_s']}/s, workers {cpu} ms CPU/share")
                ids = fresh_run(srv, sim, args)
            ours = run_cardshare(srv, sim, settings, app, args, run)
            run.figures["cardshare"] = ours
            print(f"cardshare: {ours['per_s']}/s, workers {ours['cpu_ms_per_share']['workers']} ms CPU/share")
            if args.against:
                run.figures["vs_against"] = {
                    "per_s": round(ours["per_s"] / max(theirs["per_s"], 1e-9), 3),
                    "workers_cpu": round(
                        ours["cpu_ms_per_share"]["workers"]
                        / max(theirs["cpu_ms_per_share"]["workers"], 1e-9),
                        3,
                    ),
                    "postgres_cpu": round(
                        ours["cpu_ms_per_share"]["postgres"]
                        / max(theirs["cpu_ms_per_share"]["postgres"], 1e-9),
                        3,
                    ),
                }
            if args.events == "both":
                fresh_run(srv, sim, args)
                with_events = settings.replace(task_events=True)
                configure_celery(with_events)
                evented = run_cardshare(srv, sim, with_events, app, args, run, "cardshare_events")
                configure_celery(settings)
                run.figures["cardshare_events"] = evented
                run.figures["events_vs_off"] = events_cost(ours, evented)
                print(
                    f"cardshare, task events on: {evented['per_s']}/s, "
                    f"workers {evented['cpu_ms_per_share']['workers']} ms CPU/share"
                )
            if args.baseline_seconds > 0:
                base = run_baseline(srv, sim, ids, args, run)
                run.figures["baseline"] = base
                if base["per_s"]:
                    run.figures["vs_baseline"] = round(ours["per_s"] / base["per_s"], 2)
                print(
                    f"baseline: {base['per_s']}/s, workers {base['cpu_ms_per_share']['workers']} ms CPU/share"
                )
        bench.machine.update(srv.versions())
    saved = bench.finish()
    print(f"\nmedian (min-max, spread) of {args.runs} runs")
    c, b = "cardshare.", "baseline."
    print(
        table(
            [
                "run",
                "shares/s (sustained)",
                "vs baseline",
                "run p50 ms",
                "run p99 ms",
                "enqueue->done p50 s",
                "p99 s",
                "DB statements/share",
                "DB ms/share",
            ],
            [
                [
                    "cardshare",
                    bench.cell(c + "per_s"),
                    bench.cell("vs_baseline"),
                    bench.cell(c + "run_p50_ms"),
                    bench.cell(c + "run_p99_ms"),
                    bench.cell(c + "e2e_p50_s", 2),
                    bench.cell(c + "e2e_p99_s", 2),
                    bench.cell(c + "db_statements_per_share", 2),
                    bench.cell(c + "db_ms_per_share", 3),
                ],
                [
                    "naive baseline",
                    bench.cell(b + "per_s"),
                    "1.0x",
                    "-",
                    "-",
                    "-",
                    "-",
                    bench.cell(b + "db_statements_per_share", 2),
                    bench.cell(b + "db_ms_per_share", 3),
                ],
            ],
        )
    )
    print("\nCPU ms per share")
    groups = [("workers", "workers"), ("PostgreSQL", "postgres"), ("Redis", "redis")]
    print(
        table(
            ["run", "workers", "PostgreSQL", "Redis", "simulator (+sweep)"],
            [
                [
                    "cardshare",
                    *(bench.cell(f"{c}cpu_ms_per_share.{g}", 2) for _, g in groups),
                    bench.cell(c + "cpu_ms_per_share.simulator+sweep", 2),
                ],
                [
                    "naive baseline",
                    *(bench.cell(f"{b}cpu_ms_per_share.{g}", 2) for _, g in groups),
                    bench.cell(b + "cpu_ms_per_share.simulator", 2),
                ],
            ],
        )
    )
    if args.against:
        a, r = "against.", "vs_against."
        print(f"\nthis code against {args.against}, paired in each run")
        print(
            table(
                ["code", "shares/s (sustained)", "workers CPU ms/share", "PostgreSQL CPU ms/share"],
                [
                    [
                        "against",
                        bench.cell(a + "per_s"),
                        bench.cell(a + "cpu_ms_per_share.workers", 2),
                        bench.cell(a + "cpu_ms_per_share.postgres", 2),
                    ],
                    [
                        "this",
                        bench.cell(c + "per_s"),
                        bench.cell(c + "cpu_ms_per_share.workers", 2),
                        bench.cell(c + "cpu_ms_per_share.postgres", 2),
                    ],
                    [
                        "ratio (per run)",
                        bench.cell(r + "per_s", 3),
                        bench.cell(r + "workers_cpu", 3),
                        bench.cell(r + "postgres_cpu", 3),
                    ],
                ],
            )
        )
    if args.events == "both":
        e, v = "cardshare_events.", "events_vs_off."
        print("\nCelery task events (CARDSHARE_TASK_EVENTS) on against off, same runs")
        print(
            table(
                ["task events", "shares/s (sustained)", "workers CPU ms/share", "Redis CPU ms/share"],
                [
                    [
                        "off",
                        bench.cell(c + "per_s"),
                        bench.cell(c + "cpu_ms_per_share.workers", 2),
                        bench.cell(c + "cpu_ms_per_share.redis", 2),
                    ],
                    [
                        "on",
                        bench.cell(e + "per_s"),
                        bench.cell(e + "cpu_ms_per_share.workers", 2),
                        bench.cell(e + "cpu_ms_per_share.redis", 2),
                    ],
                    [
                        "on / off",
                        bench.cell(v + "per_s_ratio", 3),
                        bench.cell(v + "workers_cpu_ratio", 3),
                        "+" + bench.cell(v + "redis_cpu_extra_ms", 3) + " ms",
                    ],
                ],
            )
        )
    print(f"\nsaved {saved}")


if __name__ == "__main__":
    main()
