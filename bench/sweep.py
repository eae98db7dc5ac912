"""Sweep benchmark: due chats in PostgreSQL to messages in Redis, against a naive loop.

python -m bench.sweep [--sizes 100000,1000000] [--naive-sizes 100000]

Every figure comes from this run on this machine: cardshare's sweep, the naive baseline
(stream the rows, one apply_async per chat) and the ceiling (raw pipelined LPUSH of
message-sized values) on the same embedded PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse

from bench.common import machine, run_child, save, seed_due_chats, servers, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--naive-sizes", default="100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    naive_sizes = {int(s) for s in args.naive_sizes.split(",") if s}
    results = []
    with servers() as srv:
        env = {"DATABASE_URL": srv.database_url, "REDIS_URL": srv.redis.url, "CARDSHARE_LOG_LEVEL": "WARNING"}
        for n in sizes:
            seed_due_chats(srv.dsn, n)
            row = {
                "n": n,
                "cardshare": run_child("bench.sweep_child", ["--mode", "cardshare", "--n", str(n)], env),
                "ceiling": run_child("bench.sweep_child", ["--mode", "lpush", "--n", str(n)], env),
            }
            if n in naive_sizes:
                row["naive"] = run_child("bench.sweep_child", ["--mode", "naive", "--n", str(n)], env)
            results.append(row)
            print(f"{n}: {row}", flush=True)
    rows = []
    base_rss = results[0]["cardshare"]["maxrss_mb"]
    for r in results:
        ours, ceiling, naive = r["cardshare"], r["ceiling"], r.get("naive")
        rows.append(
            [
                f"{r['n']:,}",
                ours["seconds"],
                f"{ours['per_s']:,}",
                f"{naive['per_s']:,}" if naive else "-",
                f"{ours['per_s'] / naive['per_s']:.1f}x" if naive else "-",
                f"{ceiling['per_s']:,}",
                f"{ours['per_s'] / ceiling['per_s']:.2f}",
                ours["maxrss_mb"],
                f"{ours['maxrss_mb'] / base_rss:.2f}",
            ]
        )
    print()
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
    print(f"\nsaved {save('sweep', {'machine': machine(), 'results': results})}")


if __name__ == "__main__":
    main()
