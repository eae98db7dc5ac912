"""End-to-end benchmark: due chats to shares, through real workers and the simulator.

python -m bench.e2e [--chats 20000] [--latency-ms 200] [--workers 2] [--concurrency 100]
                    [--baseline-seconds 60]

cardshare: the sweep enqueues every due chat; N `celery worker` processes (threads pool) claim
and share them against the simulator, which holds each share for --latency-ms. The baseline
(bench/naive_app.py) runs on the same load for --baseline-seconds; its rate is steady-state.
DB statements and time per share come from pg_stat_statements.
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

import psutil
import psycopg

from bench.common import LINE, machine, save, seed_due_chats, servers, table

KEY = "bench-key"


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


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User+system CPU so far of each group of processes. Children count for workers and
    PostgreSQL (sandboxes, backends), not for this process (they are the other groups)."""
    out: dict[str, float] = {}
    for group, ids in pids.items():
        total = 0.0
        for pid in ids:
            try:
                proc = psutil.Process(pid)
                procs = [proc] if pid == os.getpid() else [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
        out[group] = total
    return out


def server_pids(srv: Any) -> dict[str, list[int]]:
    """The PostgreSQL postmaster (its backends are children) and the Redis server."""
    pg = int((srv.postgres.pgdata / "postmaster.pid").read_text().split()[0])
    redis = int((srv.redis.directory / "redis.pid").read_text().strip())
    return {"postgres": [pg], "redis": [redis]}


def sustained(samples: list[tuple[float, int]], total: int) -> float:
    """Shares/s between 10% and 90% of the total: the steady state, no ramp-up or tail."""
    lo = next(t for t, n in samples if n >= total * 0.1)
    hi = next(t for t, n in samples if n >= total * 0.9)
    return total * 0.8 / max(hi - lo, 1e-9)


def run_cardshare(srv: Any, sim: Any, args: argparse.Namespace) -> dict[str, Any]:
    from worker.celery_app import app, configure
    from worker.config import Secret, Settings
    from worker.deps import Deps
    from worker.linq import ClientPool
    from worker.queue.publish import Publisher, queue_depth, worker_command
    from worker.sharing.sweep import run_sweep
    from worker.store.engine import make_engine, session_factory

    settings = Settings(
        database_url=srv.database_url,
        redis_url=srv.redis.url,
        linq_api_key=Secret(KEY),
        linq_base_url=sim.base_url,
        worker_concurrency=args.concurrency,
        worker_pool=args.pool,
        db_pool_size=args.db_pool,
        log_level="WARNING",
    )
    configure(settings)
    env = {**os.environ, **settings.to_env(), "CARDSHARE_LOG_FORMAT": "json"}
    cmd = worker_command(pool=args.pool, concurrency=args.concurrency, loglevel="WARNING")
    workers = start_workers(cmd, args.workers, env)
    try:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5)) < args.workers:
            assert time.monotonic() < deadline, "workers did not start"
        reset_stats(srv.dsn)
        engine = make_engine(srv.database_url, pool_size=2)
        clients = ClientPool(settings)
        deps = Deps(settings, session_factory(engine), clients.get)
        # This process hosts the simulator (and runs the sweep): its CPU is mostly Linq's side.
        groups = {"workers": [w.pid for w in workers], "simulator+sweep": [os.getpid()], **server_pids(srv)}
        probe = psycopg.connect(srv.dsn, autocommit=True)
        opened_before = sessions_opened(srv.dsn)
        cpu_before = cpu_seconds(groups)
        start = time.monotonic()
        with Publisher(app) as publish:
            report = run_sweep(deps, engine, publish, lambda: queue_depth(app), queue_lease_s=1800)
        samples = []
        while (n := succeeded(probe)) < args.chats:
            samples.append((time.monotonic() - start, n))
            assert time.monotonic() - start < 1800, f"only {n} shared"
            time.sleep(0.25)
        samples.append((time.monotonic() - start, n))
        elapsed = time.monotonic() - start
        cpu_after = cpu_seconds(groups)
        probe.close()
        # CPU of backends that came and went is not in cpu_ms_per_share (they are gone before
        # it is read): a pool that churns connections shows here instead.
        opened = sessions_opened(srv.dsn) - opened_before
        calls, ms = db_stats(srv.dsn)
        clients.close()
        engine.dispose()
    finally:
        stop(workers)
    shares = sim.admin.shares()
    return {
        "shares": n,
        "enqueued": report.enqueued,
        "seconds": round(elapsed, 1),
        "per_s": round(sustained(samples, args.chats), 1),
        "overall_per_s": round(n / elapsed, 1),
        "db_statements_per_share": round(calls / n, 2),
        "db_ms_per_share": round(ms / n, 3),
        "db_connections_opened": opened,
        "simulator_accepted": shares["total_accepted"],
        **latencies(srv.dsn),
        "cpu_ms_per_share": {g: round(1000 * (cpu_after[g] - cpu_before[g]) / n, 2) for g in groups},
    }


def run_baseline(srv: Any, sim: Any, args: argparse.Namespace) -> dict[str, Any]:
    import datetime as dt

    from bench import naive_app

    with psycopg.connect(srv.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE share_days, attempts")
        ids = [r[0] for r in conn.execute("SELECT id FROM chats")]
    env = {
        **os.environ,
        "DATABASE_URL": srv.database_url,
        "REDIS_URL": srv.redis.url,
        "LINQ_API_V3_API_KEY": KEY,
        "LINQ_API_V3_BASE_URL": sim.base_url,
    }
    sim.admin.reset()
    sim.admin.add_cards([{"phone_number": LINE, "first_name": "Bench", "is_active": True}])
    sim.admin.add_chats(
        [
            {
                "id": str(i),
                "line": LINE,
                "service": "iMessage",
                "messages": [{"is_from_me": True, "sent_at": "2026-01-01T00:00:00+00:00"}],
            }
            for i in ids
        ]
    )
    sim.admin.add_faults([{"path": "/share_contact_card$", "mode": "pass", "latency_ms": args.latency_ms}])
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
            naive_app.share.apply_async(args=(str(chat_id), day))
        start = time.monotonic()
        time.sleep(args.baseline_seconds)
        n = succeeded(srv.dsn)
        elapsed = time.monotonic() - start
        calls, ms = db_stats(srv.dsn)
    finally:
        stop(workers)
    return {
        "shares": n,
        "seconds": round(elapsed, 1),
        "per_s": round(n / elapsed, 1),
        "db_statements_per_share": round(calls / max(n, 1), 2),
        "db_ms_per_share": round(ms / max(n, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=20000)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--pool", choices=["threads", "gevent"], default="threads")
    parser.add_argument("--db-pool", type=int, default=None, help="default: --concurrency")
    parser.add_argument("--baseline-seconds", type=float, default=60)
    args = parser.parse_args()
    from worker.simulator import SimulatorServer

    with servers(stat_statements=True) as srv, SimulatorServer(api_key=KEY) as sim:
        seed_due_chats(srv.dsn, args.chats)
        with psycopg.connect(srv.dsn) as conn:
            ids = [str(r[0]) for r in conn.execute("SELECT id FROM chats")]
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
        sim.admin.add_faults(
            [{"path": "/share_contact_card$", "mode": "pass", "latency_ms": args.latency_ms}]
        )
        ours = run_cardshare(srv, sim, args)
        print("cardshare", ours, flush=True)
        base = run_baseline(srv, sim, args) if args.baseline_seconds > 0 else None
        print("baseline", base, flush=True)
    ratio = f"{ours['per_s'] / base['per_s']:.1f}x" if base and base["per_s"] else "-"
    print()
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
                    ours["per_s"],
                    ratio,
                    ours["run_p50_ms"],
                    ours["run_p99_ms"],
                    ours["e2e_p50_s"],
                    ours["e2e_p99_s"],
                    ours["db_statements_per_share"],
                    ours["db_ms_per_share"],
                ],
                [
                    "naive baseline",
                    base["per_s"] if base else "-",
                    "1.0x",
                    "-",
                    "-",
                    "-",
                    "-",
                    base["db_statements_per_share"] if base else "-",
                    base["db_ms_per_share"] if base else "-",
                ],
            ],
        )
    )
    saved = save("e2e", {"machine": machine(), "args": vars(args), "cardshare": ours, "baseline": base})
    print(f"\nsaved {saved}")


if __name__ == "__main__":
    main()
