"""Benchmark plumbing: dedicated embedded servers, bulk seeding, child processes, tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from worker import migrate
from worker.embedded import EmbeddedPostgres, EmbeddedRedis

LINE = "+12125550100"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Servers:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    root: Path

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def servers(stat_statements: bool = False) -> Iterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="cardshare-bench-"))
    pg = EmbeddedPostgres(root / "pg")
    pg.start()
    if stat_statements:
        pg.configure(shared_preload_libraries="pg_stat_statements")
        pg.start()  # re-read the socket after the restart
    redis = EmbeddedRedis(root / "redis")
    redis.start()
    migrate.upgrade(pg.url())
    try:
        yield Servers(pg, redis, root)
    finally:
        redis.stop()
        pg.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def seed_due_chats(dsn: str, n: int, *, line: str = LINE) -> None:
    """n due iMessage chats on one line with an active card, generated inside PostgreSQL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE share_days, attempts, chats, lines CASCADE")
        conn.execute(
            "INSERT INTO lines (phone_number, first_name, card_active, card_checked_at) "
            "VALUES (%s, 'Bench', true, now())",
            (line,),
        )
        conn.execute(
            """
            INSERT INTO chats (id, line_phone, service, is_group, first_outbound_at, last_outbound_at)
            SELECT gen_random_uuid(), %s, 'iMessage', false, now() - interval '2 hours',
                   now() - interval '1 hour'
            FROM generate_series(1, %s)
            """,
            (line, n),
        )
        conn.execute("VACUUM ANALYZE chats")


def run_child(
    module: str, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3600
) -> Any:
    """Run `python -m module args` and return the JSON its last stdout line holds."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
