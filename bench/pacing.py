"""Pacing benchmark: per-line caps across two workers, counted by the simulator, and what pacing
costs when the caps do not bind.

python -m bench.pacing [--big 5000] [--small-lines 50] [--small 20] [--big-cap 3000]
                       [--small-cap 60] [--latency-ms 200] [--workers 2] [--concurrency 100]
                       [--runs 3] [--quick] [--noisy-above 20]

One line of --big chats and --small-lines lines of --small chats, all due. Each run measures
three modes from fresh state (tables emptied, chats re-seeded, Redis flushed, the simulator
reset, new worker processes), so every ratio is within one run:
- unpaced: CARDSHARE_LINE_SHARES_PER_MINUTE=0, no Redis call on the share path (today's rate);
- paced, caps that allow it: every line capped at 1,000,000/min, so each share makes its Lua
  call and each pass takes its slots, but nothing waits: total shares/s against unpaced;
- paced, binding caps: the big line at --big-cap per minute (higher than the 60/min default so a
  run takes minutes, not an hour), every small line at --small-cap (the default). The release
  pass runs every CARDSHARE_RELEASE_INTERVAL (5 s) as beat would run it. The simulator's own log
  gives each line's most accepted shares in any 60 s window (against its cap); the small lines'
  finish time shows they are not held up by the big one.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import psycopg

from bench import repeat
from bench.common import (
    Servers,
    bench_settings,
    configure_celery,
    releaser,
    reset_state,
    servers,
    simulator,
    sweeper,
    table,
    worker_command,
)
from bench.e2e import cpu_seconds, per_share, start_workers, stop

BIG = "+12125550100"
FREE_CAP = 1_000_000


def small_line(i: int) -> str:
    return f"+1313555{i:04d}"


def seed(srv: Servers, sim: Any, args: argparse.Namespace) -> dict[str, list[str]]:
    """Every line with an active card and its due chats, in PostgreSQL and in the simulator."""
    lines = {BIG: args.big, **{small_line(i): args.small for i in range(args.small_lines)}}
    out: dict[str, list[str]] = {}
    with psycopg.connect(srv.dsn, autocommit=True) as conn:
        for phone, n in lines.items():
            conn.execute(
                "INSERT INTO lines (phone_number, first_name, card_active, card_checked_at, reputation, "
                "reputation_at) VALUES (%s, 'Bench', true, now(), 'HEALTHY', now())",
                (phone,),
            )
            rows = conn.execute(
                """
                INSERT INTO chats (id, line_phone, service, is_group, first_outbound_at, last_outbound_at)
                SELECT gen_random_uuid(), %s, 'iMessage', false, now() - interval '2 hours',
                       now() - interval '1 hour'
                FROM generate_series(1, %s) RETURNING id
                """,
                (phone, n),
            ).fetchall()
            out[phone] = [str(r[0]) for r in rows]
        conn.execute("VACUUM ANALYZE chats")
    sim.admin.reset()
    sim.admin.add_cards([{"phone_number": p, "first_name": "Bench", "is_active": True} for p in lines])
    sim.admin.add_chats(
        [
            {
                "id": c,
                "line": phone,
                "service": "iMessage",
                "messages": [{"is_from_me": True, "sent_at": "2026-01-01T00:00:00+00:00"}],
            }
            for phone, chats in out.items()
            for c in chats
        ]
    )
    sim.admin.add_faults([{"path": "/share_contact_card$", "mode": "pass", "latency_ms": args.latency_ms}])
    return out


def finished(dsn: str) -> dict[str, Any]:
    """From the chat-days: when each share finished, relative to the first claim; per line."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            SELECT count(*), extract(epoch FROM max(finished_at) - min(claimed_at)),
                   extract(epoch FROM percentile_cont(0.9) WITHIN GROUP (ORDER BY finished_at - m.t0)),
                   extract(epoch FROM percentile_cont(0.1) WITHIN GROUP (ORDER BY finished_at - m.t0)),
                   extract(epoch FROM max(finished_at) FILTER (WHERE c.line_phone <> %s) - min(m.t0)),
                   extract(epoch FROM max(finished_at) FILTER (WHERE c.line_phone = %s) - min(m.t0)),
                   count(*) FILTER (WHERE c.line_phone = %s)
            FROM share_days d JOIN chats c ON c.id = d.chat_id,
                 (SELECT min(claimed_at) AS t0 FROM share_days) m
            WHERE d.status = 'succeeded'
            """,
            (BIG, BIG, BIG),
        ).fetchone()
    assert row is not None
    n, span, t90, t10, small_done, big_done, big_n = row
    return {
        "shares": int(n),
        "seconds": round(float(span), 1),
        "per_s": round(0.8 * n / max(float(t90) - float(t10), 1e-9), 1),
        "overall_per_s": round(n / max(float(span), 1e-9), 1),
        "small_lines_done_s": round(float(small_done), 1),
        "big_line_done_s": round(float(big_done), 1),
        "big_line_per_min": round(60 * int(big_n) / max(float(big_done), 1e-9), 1),
    }


def run_mode(srv: Servers, sim: Any, args: argparse.Namespace, run: repeat.Run, mode: str) -> dict[str, Any]:
    reset_state(srv)
    seeded = seed(srv, sim, args)
    total = sum(len(c) for c in seeded.values())
    caps = {"unpaced": 0, "paced_free": FREE_CAP, "paced": args.small_cap}[mode]
    settings = bench_settings(
        database_url=srv.database_url,
        redis_url=srv.redis.url,
        linq_base_url=sim.base_url,
        worker_concurrency=args.concurrency,
        log_level="WARNING",
        line_shares_per_minute=caps,
        at_risk_shares_per_minute=caps,
    )
    if mode == "paced":
        with psycopg.connect(srv.dsn, autocommit=True) as conn:
            conn.execute("UPDATE lines SET pace_per_minute = %s WHERE phone_number = %s", (args.big_cap, BIG))
    app = configure_celery(settings)
    env = {**os.environ, **settings.to_env(), "CARDSHARE_LOG_FORMAT": "json"}
    workers = start_workers(
        worker_command(pool="threads", concurrency=args.concurrency, loglevel="WARNING"), args.workers, env
    )
    try:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5)) < args.workers:
            assert time.monotonic() < deadline, "workers did not start"
        groups = {
            "workers": [w.pid for w in workers],
            "redis": [srv.redis_pid()],
            "postgres": [srv.postgres_pid()],
        }
        with (
            sweeper(settings, app) as sweep,
            releaser(settings, app) as release,
            psycopg.connect(srv.dsn, autocommit=True) as probe,
            run.measure(mode),
        ):
            before = cpu_seconds(groups)
            start = time.monotonic()
            sweep()
            next_release = start + settings.release_interval_s
            while True:
                row = probe.execute("SELECT count(*) FROM share_days WHERE status = 'succeeded'").fetchone()
                done = int(row[0]) if row else 0
                if done >= total:
                    break
                assert time.monotonic() - start < 3600, f"{mode}: only {done} of {total} shared"
                if time.monotonic() >= next_release:
                    release()  # what beat does every CARDSHARE_RELEASE_INTERVAL
                    next_release += settings.release_interval_s
                time.sleep(0.25)
            after = cpu_seconds(groups)
    finally:
        stop(workers)
    figures = finished(srv.dsn)
    pace = sim.admin.pace(60.0)["lines"]
    big = pace[BIG]["max_in_window"]
    small = max(v["max_in_window"] for line, v in pace.items() if line != BIG)
    figures.update(
        {
            "max_in_60s_big": big,
            "max_in_60s_small": small,
            "simulator_accepted": sim.admin.shares()["total_accepted"],
            "cpu_ms_per_share": per_share(before, after, figures["shares"]),
        }
    )
    if mode == "paced":
        figures["big_cap"] = args.big_cap
        figures["small_cap"] = args.small_cap
        figures["cap_exceeded_lines"] = sum(
            1
            for line, v in pace.items()
            if v["max_in_window"] > (args.big_cap if line == BIG else args.small_cap)
        )
        figures["big_line_of_cap"] = round(figures["big_line_per_min"] / args.big_cap, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", type=int, default=5000, help="chats on the big line")
    parser.add_argument("--small-lines", type=int, default=50)
    parser.add_argument("--small", type=int, default=20, help="chats on each small line")
    parser.add_argument("--big-cap", type=int, default=3000, help="the big line's cap per minute")
    parser.add_argument("--small-cap", type=int, default=60, help="the small lines' cap (the default)")
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    repeat.add_arguments(parser, quick={"big": 600, "small_lines": 10, "small": 10, "big_cap": 600})
    args = repeat.parse(parser)
    bench = repeat.Bench("pacing", args)
    with servers() as srv, simulator() as sim:
        bench.track(srv.pids)
        for run in bench.runs():
            for mode in ("unpaced", "paced_free", "paced"):
                figures = run_mode(srv, sim, args, run, mode)
                run.figures[mode] = figures
                print(
                    f"  {mode}: {figures['per_s']}/s sustained, big line max {figures['max_in_60s_big']} "
                    f"and small lines max {figures['max_in_60s_small']} in any 60 s, small lines done "
                    f"{figures['small_lines_done_s']} s",
                    flush=True,
                )
            free, base = run.figures["paced_free"]["per_s"], run.figures["unpaced"]["per_s"]
            run.figures["paced_free_vs_unpaced"] = round(free / base, 3) if base else None
        bench.machine.update(srv.versions())
    saved = bench.finish()
    print(f"\nmedian (min-max, spread) of {args.runs} runs")
    rows = []
    for mode, label in (
        ("unpaced", "unpaced (cap 0)"),
        ("paced_free", f"paced, caps {FREE_CAP:,}/min"),
        ("paced", f"paced, big {args.big_cap}/min, small {args.small_cap}/min"),
    ):
        rows.append(
            [
                label,
                bench.cell(f"{mode}.per_s"),
                bench.cell(f"{mode}.max_in_60s_big", 0),
                bench.cell(f"{mode}.max_in_60s_small", 0),
                bench.cell(f"{mode}.small_lines_done_s"),
                bench.cell(f"{mode}.big_line_per_min"),
                bench.cell(f"{mode}.cpu_ms_per_share.workers", 2),
                bench.cell(f"{mode}.cpu_ms_per_share.redis", 3),
            ]
        )
    print(
        table(
            [
                "mode",
                "shares/s (sustained)",
                "big line max/60 s",
                "small lines max/60 s",
                "small lines done s",
                "big line /min",
                "worker CPU ms/share",
                "Redis CPU ms/share",
            ],
            rows,
        )
    )
    print(f"\npaced (caps allow it) vs unpaced, shares/s: {bench.cell('paced_free_vs_unpaced', 3)}")
    print(f"binding caps: lines over their cap in any 60 s: {bench.cell('paced.cap_exceeded_lines', 0)}")
    print(f"big line's rate / its cap: {bench.cell('paced.big_line_of_cap', 3)}")
    print(f"\nsaved {saved}")


if __name__ == "__main__":
    main()
