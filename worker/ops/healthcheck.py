"""`cardshare health`: one line and exit 0/1, for container healthchecks and Kubernetes probes.

Kept apart from the rest of the CLI (outside the `worker.cli` package), with only light imports
(click, redis, settings; httpx only for --webhooks, psycopg only for --ready): a healthcheck runs
every 30 s in every container, and loading the whole `cardshare` command (SQLAlchemy, Celery,
the Linq SDK) costs about 1.2 s of CPU each time instead of 0.2 s. `worker.entry` runs this
command directly; `worker.cli.ops` registers it on the main group. It reads its settings from
the environment itself: it is its own short process.

Three questions (README, "Kubernetes"):
- no flag (compose's healthcheck): is this host's worker making progress, judged in Redis;
- `--live`: is this process making progress, judged from its heartbeat file alone (`liveness`),
  so an outage of Redis or PostgreSQL never fails it;
- `--ready`: do its dependencies answer (Redis, PostgreSQL) and is it registered there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
import redis

from worker.config import Settings
from worker.errors import CardshareError, InputError
from worker.ops import health as probes
from worker.ops import liveness

# Readiness must answer well inside the probe's timeout (10 s in deploy/kubernetes).
CONNECT_TIMEOUT_S = 3


@click.command()
@click.option(
    "--beat", "check_beat", is_flag=True, help="Check beat's heartbeat instead of this host's workers."
)
@click.option("--webhooks", "check_webhooks", is_flag=True, help="Check the webhook receiver on this host.")
@click.option(
    "--live", "live", is_flag=True, help="Liveness: this process makes progress (local state only)."
)
@click.option(
    "--ready", "ready", is_flag=True, help="Readiness: Redis and PostgreSQL answer and it is registered."
)
@click.option(
    "--node", default=None, help="Check this worker node (default: every live worker of this host)."
)
def health(check_beat: bool, check_webhooks: bool, live: bool, ready: bool, node: str | None) -> None:
    """Exit 0 when healthy, 1 when not; one line either way (a container healthcheck).

    A worker is unhealthy when messages wait and it finished no task for
    CARDSHARE_HEALTH_STALL_MINUTES, even though its process is alive. --live judges that from
    this host's heartbeat files only, so it stays healthy while Redis or PostgreSQL is down;
    --ready asks them.
    """
    try:
        if check_beat and check_webhooks:
            raise InputError("--beat and --webhooks check different things: give one")
        if live and ready:
            raise InputError("--live and --ready are different probes: give one")
        settings = Settings.from_env()
    except CardshareError as exc:
        click.echo(f"cardshare: {exc}", err=True)
        sys.exit(exc.exit_code)
    stall_s = settings.health_stall_minutes * 60
    if check_webhooks:
        wildcard = settings.webhook_host in ("0.0.0.0", "::", "")
        host = "127.0.0.1" if wildcard else settings.webhook_host
        shown = f"[{host}]" if ":" in host else host
        path = "/readyz" if ready else "/healthz"
        _verdict(probes.probe_http(f"http://{shown}:{settings.webhook_port}{path}"))
    if live:
        kind = "beat" if check_beat else "worker"
        _verdict(liveness.probe(settings.data_dir, kind=kind, stall_s=stall_s, node=node))
    data_dir = settings.data_dir.resolve()
    url = settings.redis_url or probes.embedded_redis_url(data_dir)
    if url is None:
        _verdict(
            probes.Verdict(False, "REDIS_URL is not set and no embedded Redis runs under CARDSHARE_DATA_DIR")
        )
    checks: list[probes.Verdict] = []
    if ready and not check_beat:
        # Beat never touches PostgreSQL after its start; workers and the receiver do.
        checks.append(postgres_answers(settings.database_url, data_dir))
    try:
        with probes.connected(url) as client:
            if check_beat:
                checks.append(probes.probe_beat(client))
            else:
                checks.append(probes.probe_workers(client, stall_s=stall_s, node=node, fresh=ready))
    except (redis.RedisError, OSError) as exc:
        checks.append(probes.Verdict(False, f"cannot reach Redis: {exc}"))
    bad = [c for c in checks if not c.ok]
    _verdict(probes.Verdict(not bad, "; ".join(c.line for c in (bad or checks))))


def postgres_answers(database_url: str | None, data_dir: Path) -> probes.Verdict:
    """PostgreSQL accepts a connection to cardshare's database within CONNECT_TIMEOUT_S."""
    # Imported here: only readiness needs the driver (~0.1 s of CPU).
    import psycopg

    dsn = libpq_dsn(database_url) if database_url else embedded_database_dsn(data_dir)
    if dsn is None:
        return probes.Verdict(
            False, "DATABASE_URL is not set and no embedded PostgreSQL runs under CARDSHARE_DATA_DIR"
        )
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, application_name="cardshare-health"):
            pass
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return probes.Verdict(False, f"PostgreSQL does not answer: {first}")
    return probes.Verdict(True, "PostgreSQL answers")


def libpq_dsn(database_url: str) -> str:
    """Our SQLAlchemy URL (`postgresql+psycopg://`) as libpq reads it."""
    return "postgresql://" + database_url.split("://", 1)[1]


def embedded_database_dsn(data_dir: Path) -> str | None:
    """The embedded PostgreSQL another command started under `data_dir`, from its postmaster.pid."""
    try:
        lines = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()
        port, socket_dir = int(lines[3]), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return None
    return f"postgresql://postgres@/cardshare?host={socket_dir}&port={port}"


def _verdict(verdict: probes.Verdict) -> NoReturn:
    click.echo(f"{'healthy' if verdict.ok else 'unhealthy'}: {verdict.line}")
    sys.exit(0 if verdict.ok else 1)
