"""Sweep benchmark: due chats in PostgreSQL to messages in Redis, against a naive loop.

python -m bench.sweep [--sizes 100000,1000000] [--naive-sizes 100000] [--runs 3] [--quick]

Every figure comes from this invocation on this machine: cardshare's sweep, the naive baseline
(stream the rows, one apply_async per chat) and the ceiling (raw pipelined LPUSH of
message-sized values) on the same embedded PostgreSQL and Redis. Each run re-seeds every size
and measures the three side by side, so ratios are per run; each measurement is its own
process, so peak RSS is that measurement's.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import repeat
from bench.common import reset_state, run_child, seed_due_chats, servers, table


def summary_line(row: dict[str, Any]) -> str:
    ours, ceiling, naive = row["cardshare"], row["ceiling"], row.get("naive")
    text = f"cardshare {ours['per_s']:,}/s in {ours['seconds']} s, peak RSS {ours['maxrss_mb']} MB"
    if naive:
        text += f"; naive {naive['per_s']:,}/s ({row['vs_naive']}x)"
    return text + f"; LPUSH ceiling {ceiling['per_s']:,}/s ({row['of_ceiling']} of it)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--naive-sizes", default="100000")
    repeat.add_arguments(parser, quick={"sizes": "5000,20000", "naive_sizes": "5000"})
    args = repeat.parse(parser)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    naive_sizes = {int(s) for s in args.naive_sizes.split(",") if s}
    bench = repeat.Bench("sweep", args)
    with servers() as srv:
        bench.track(srv.pids)
        env = {"DATABASE_URL": srv.database_url, "REDIS_URL": srv.redis.url, "CARDSHARE_LOG_LEVEL": "WARNING"}
        for run in bench.runs():
            by_size: dict[str, dict[str, Any]] = {}
            for n in sizes:
                reset_state(srv)
                seed_due_chats(srv.dsn, n)
                row: dict[str, Any] = {}
                modes = ["cardshare", "lpush", *(["naive"] if n in naive_sizes else [])]
                for mode in modes:
                    name = "ceiling" if mode == "lpush" else mode
                    with run.measure(f"{name}@{n}"):
                        row[name] = run_child("bench.sweep_child", ["--mode", mode, "--n", str(n)], env)
                ours, ceiling, naive = row["cardshare"], row["ceiling"], row.get("naive")
                row["of_ceiling"] = round(ours["per_s"] / ceiling["per_s"], 3)
                if naive:
                    row["vs_naive"] = round(ours["per_s"] / naive["per_s"], 2)
                by_size[str(n)] = row
                print(f"{n:,}: {summary_line(row)}", flush=True)
            first = by_size[str(sizes[0])]["cardshare"]["maxrss_mb"]
            for row in by_size.values():
                row["rss_vs_first"] = round(row["cardshare"]["maxrss_mb"] / first, 3)
            run.figures["sizes"] = by_size
        bench.machine.update(srv.versions())
    saved = bench.finish()
    rows = []
    for n in sizes:
        p = f"sizes.{n}."
        rows.append(
            [
                f"{n:,}",
                bench.cell(p + "cardshare.seconds", 2),
                bench.cell(p + "cardshare.per_s", 0),
                bench.cell(p + "naive.per_s", 0),
                bench.cell(p + "vs_naive", 1),
                bench.cell(p + "ceiling.per_s", 0),
                bench.cell(p + "of_ceiling", 3),
                bench.cell(p + "cardshare.maxrss_mb", 1),
                bench.cell(p + "rss_vs_first", 2),
            ]
        )
    print(f"\nmedian (min-max, spread) of {args.runs} runs")
    print(
        table(
            [
                "due chats",
                "sweep s",
                "enqueues/s",
                "naive/s",
                "vs naive",
                "LPUSH ceiling/s",
                "of ceiling",
                "peak RSS MB",
                "RSS vs first",
            ],
            rows,
        )
    )
    print(f"\nsaved {saved}")


if __name__ == "__main__":
    main()
