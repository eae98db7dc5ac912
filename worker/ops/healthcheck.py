"""`cardshare health`: one line and exit 0/1, for container healthchecks.

Kept apart from the rest of the CLI (outside the `worker.cli` package), with only light imports
(click, redis, settings; httpx only for --webhooks): a healthcheck runs every 30 s in every
container, and loading the whole `cardshare` command (SQLAlchemy, Celery, the Linq SDK) costs
about 1.2 s of CPU each time instead of 0.2 s. `worker.entry` runs this command directly;
`worker.cli.ops` registers it on the main group. It reads its settings from the environment
itself: it is its own short process.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import redis

from worker.config import Settings
from worker.errors import CardshareError, InputError
from worker.ops import health as probes


@click.command()
@click.option(
    "--beat", "check_beat", is_flag=True, help="Check beat's heartbeat instead of this host's workers."
)
@click.option("--webhooks", "check_webhooks", is_flag=True, help="Check the webhook receiver on this host.")
@click.option(
    "--node", default=None, help="Check this worker node (default: every live worker of this host)."
)
def health(check_beat: bool, check_webhooks: bool, node: str | None) -> None:
    """Exit 0 when healthy, 1 when not; one line either way (a container healthcheck).

    A worker is unhealthy when messages wait and it finished no task for
    CARDSHARE_HEALTH_STALL_MINUTES, even though its process is alive.
    """
    try:
        if check_beat and check_webhooks:
            raise InputError("--beat and --webhooks check different things: give one")
        settings = Settings.from_env()
    except CardshareError as exc:
        click.echo(f"cardshare: {exc}", err=True)
        sys.exit(exc.exit_code)
    if check_webhooks:
        wildcard = settings.webhook_host in ("0.0.0.0", "::", "")
        host = "127.0.0.1" if wildcard else settings.webhook_host
        shown = f"[{host}]" if ":" in host else host
        _verdict(probes.probe_http(f"http://{shown}:{settings.webhook_port}/healthz"))
    url = settings.redis_url or probes.embedded_redis_url(settings.data_dir.resolve())
    if url is None:
        _verdict(
            probes.Verdict(False, "REDIS_URL is not set and no embedded Redis runs under CARDSHARE_DATA_DIR")
        )
    try:
        with probes.connected(url) as client:
            if check_beat:
                verdict = probes.probe_beat(client)
            else:
                verdict = probes.probe_workers(client, stall_s=settings.health_stall_minutes * 60, node=node)
    except (redis.RedisError, OSError) as exc:
        verdict = probes.Verdict(False, f"cannot reach Redis: {exc}")
    _verdict(verdict)


def _verdict(verdict: probes.Verdict) -> NoReturn:
    click.echo(f"{'healthy' if verdict.ok else 'unhealthy'}: {verdict.line}")
    sys.exit(0 if verdict.ok else 1)
