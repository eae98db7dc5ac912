"""Start-up of the operator commands (issue 17, point 5), this checkout against another.

python -m bench.startup [--against CHECKOUT] [--runs 7]

Against running embedded servers (an empty, migrated database but for one line and one chat
due today), each run starts `cardshare status --json`, `history CHAT`, `check --json`, `share
CHAT`, `share DUE_CHAT`, `recover` and `health` once through the console script's entry point
(`bench/startup_probe.py`) and records the process's wall time and the time from its first
line of Python to its first PostgreSQL connection. With --against, the same commands run with
CHECKOUT's `worker` package (PYTHONPATH) right after each of this checkout's, alternating, so
both see the same box: the ratio per command is the change's effect. CHAT is unknown, so
`history` and `share` stop at their first query (exit 2): what is measured is the start, not
the work. `share due` names the due chat, so it goes on to publish its message (and loads
Celery for it); `recover` finds nothing to re-queue. Compile both checkouts' bytecode first
(`python -m compileall worker`): an installed wheel has it, and PYTHONDONTWRITEBYTECODE would
otherwise make every run compile the package again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench import repeat
from bench.common import API_KEY, servers
from worker import migrate

HERE = Path(__file__).resolve().parent.parent
RESULTS = HERE / "bench" / "results" / "startup.json"


def one(checkout: Path, args: list[str], env: dict[str, str]) -> tuple[float, float | None]:
    """Wall seconds and seconds to the first PostgreSQL connection (None: it made none)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(checkout / "bench" / "startup_probe.py"), *args],
        env={**env, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        cwd="/",  # not a checkout: `worker` comes from PYTHONPATH only
        timeout=120,
        check=False,
    )
    wall = time.perf_counter() - started
    marks = [line for line in done.stderr.splitlines() if line.startswith("STARTUP first_connect_s=")]
    if not marks:
        said = done.stderr[-300:]
        raise SystemExit(f"{checkout}: cardshare {' '.join(args)} printed no STARTUP line: {said}")
    first = float(marks[-1].split("=", 1)[1])
    return wall, (first if first >= 0 else None)


DUE_CHAT = uuid.UUID("00000000-0000-4000-8000-00000000d0e0")
LINE = "+12223334444"


def seed_due_chat(database_url: str) -> None:
    """A line with an active card and one iMessage chat with an outbound message now: due today."""
    import datetime as dt

    from worker.rules.facts import ChatActivity
    from worker.store.cards import CardState, store_cards
    from worker.store.chats import record_activity
    from worker.store.engine import make_engine, session_factory
    from worker.store.session import transaction

    engine = make_engine(database_url, pool_size=1)
    try:
        with transaction(session_factory(engine)) as s:
            store_cards(s, [CardState(LINE, "Acme", "Support", None, True)], complete=False)
            now = dt.datetime.now(dt.UTC)
            record_activity(
                s, [ChatActivity(DUE_CHAT, LINE, service="iMessage", is_group=False, outbound_at=now)]
            )
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, default=None, help="another checkout (e.g. a git worktree)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    checkouts = {"this": HERE}
    if args.against is not None:
        checkouts = {"against": args.against.resolve(), "this": HERE}
    chat = str(uuid.uuid4())
    commands = {
        "status": ["status", "--json"],
        "history": ["history", chat],
        "check": ["check", "--json"],
        "share": ["share", chat],
        "share due": ["share", str(DUE_CHAT)],
        "recover": ["recover"],
        "health": ["health"],
    }
    figures: dict[str, dict[str, dict[str, list[float]]]] = {
        name: {c: {"wall_s": [], "first_connect_s": []} for c in commands} for name in checkouts
    }
    with servers() as srv:
        migrate.upgrade(srv.database_url)
        seed_due_chat(srv.database_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSHARE_", "LINQ_", "PYTHON"))}
        env.update(
            DATABASE_URL=srv.database_url,
            REDIS_URL=srv.redis.url,
            LINQ_API_V3_API_KEY=API_KEY,
            CARDSHARE_LOG_LEVEL="WARNING",
        )
        for run in range(args.runs):
            for command, argv_ in commands.items():
                for name, checkout in checkouts.items():
                    wall, first = one(checkout, argv_, env)
                    figures[name][command]["wall_s"].append(wall)
                    if first is not None:
                        figures[name][command]["first_connect_s"].append(first)
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    machine = repeat.machine()
    headers = ["command", *(f"{n} wall s" for n in checkouts), *(f"{n} to first query s" for n in checkouts)]
    if "against" in checkouts:
        headers.append("wall this/against")
    rows = []
    out: dict[str, object] = {"machine": machine, "runs": args.runs, "commands": {}}
    for command in commands:
        spreads = {
            n: {k: repeat.summarize(v) for k, v in figures[n][command].items() if v} for n in checkouts
        }
        row = [command]
        row += [repeat.cell(spreads[n]["wall_s"], 3) for n in checkouts]
        row += [
            repeat.cell(spreads[n]["first_connect_s"], 3) if "first_connect_s" in spreads[n] else "-"
            for n in checkouts
        ]
        if "against" in checkouts:
            this, against = figures["this"][command]["wall_s"], figures["against"][command]["wall_s"]
            ratios = [t / a for t, a in zip(this, against, strict=True)]
            row.append(repeat.cell(repeat.summarize(ratios), 2))
        rows.append(row)
        out["commands"][command] = {  # type: ignore[index]
            n: {k: s.as_dict() for k, s in spreads[n].items()} for n in checkouts
        }
    width = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, ["-" * w for w in width], *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, width, strict=True)) + " |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
