"""Settings: one declaration per setting, read from the environment once per process.

Each field of `Settings` is declared with `setting(...)`: its environment variable, the parser
that reads it, and its row in the README's configuration table (a test compares the table with
`readme_rows()`; `python -m worker.config` prints the rows). `Settings.from_env()` runs at a
process's entry point (`cli.common.load_settings`, `worker.celery_app`, the sandbox child, the
healthcheck); children get `Settings.to_env()`; tests build `Settings(...)`. Secrets are masked
in `repr` so a stray log of the object leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import os
import sys
import urllib.parse
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from worker.errors import ConfigError
from worker.rules.bounds import mask_url as mask_url  # re-exported: how every URL is shown

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.linqapp.com/api/partner"

# Linq allows one share per chat per 5 minutes; a crashed chat-day must be taken over inside
# that window so the 429 on the retry can confirm the first share (docs/decisions.md §3).
LINQ_SHARE_WINDOW_S = 300.0


class Secret:
    """A string that never shows itself in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --------------------------------------------------------------------------- parsers


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be zero or a positive number")
    return value


def _ratio(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return value


def _webhook_secrets(raw: str) -> tuple[Secret, ...]:
    # Several at once so a rotated secret keeps verifying until Linq stops using it.
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())


def _check_webhook_secret(value: str, position: int, *, legacy: bool) -> None:
    """Reject a malformed secret naming only its position: the value itself must never be printed."""
    name = Settings.env_name("webhook_secrets")
    if not value.startswith("whsec_"):
        if legacy:
            return  # a pre-`whsec_` secret can still check the legacy X-Webhook-Signature
        raise ConfigError(name, f"secret #{position} does not start with whsec_")
    body = value.removeprefix("whsec_")
    try:
        # Padding is optional, as in the standardwebhooks library.
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        raise ConfigError(name, f"secret #{position} is not whsec_ followed by base64") from None
    if not key:
        raise ConfigError(name, f"secret #{position} is empty after whsec_")


DUE_POLICIES = ("active-window", "outbound-today")


def _due_policy(raw: str) -> str:
    value = raw.strip().lower()
    if value not in DUE_POLICIES:
        raise ValueError("must be active-window or outbound-today")
    return value


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _check_url(raw: str, *, need_host: bool) -> None:
    """A URL that will parse later too: no spaces or controls, a numeric port in range, a host.
    The messages never repeat the URL (it may hold a password)."""
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise ValueError("contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(raw)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        reason = (
            "has a malformed host or port" if "port" in str(exc).lower() or "IPv6" in str(exc) else str(exc)
        )
        raise ValueError(reason) from None
    if port == 0:
        raise ValueError("has port 0")
    if need_host and not parts.hostname:
        raise ValueError("has no host")


def _database_url(raw: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if raw.startswith(prefix):
            # A socket directory (?host=/run/postgresql) may stand in for the host.
            _check_url(raw, need_host="host=" not in raw)
            # One driver everywhere: psycopg 3.
            return "postgresql+psycopg://" + raw[len(prefix) :]
    raise ValueError("must be a postgresql:// URL")


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis:// URL")
    _check_url(raw, need_host=not raw.startswith("unix://"))
    return raw


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    _check_url(raw, need_host=True)
    return raw.rstrip("/")


def _as_text(value: Any) -> str:
    """A value as its variable spells it (what `to_env` writes and the README shows)."""
    if isinstance(value, Secret):
        return value.get()
    if isinstance(value, tuple):
        return ",".join(_as_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() else repr(value)
    return str(value)


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Var:
    """One setting's environment variable: its name, its parser, and its README row. A secret's
    value may come from a file instead (`from_file`: `NAME_FILE`, for Kubernetes and compose
    secrets mounted as files)."""

    name: str
    parse: Callable[[str], Any]
    shown_default: str
    meaning: str
    from_file: bool = False

    @property
    def file_name(self) -> str:
        return f"{self.name}_FILE"

    def readme_row(self) -> str:
        meaning = self.meaning
        if self.from_file:
            meaning += f"; or `{self.file_name}`: the path of a file holding it"
        return f"| `{self.name}` | {self.shown_default} | {meaning} |"


_VAR = "cardshare.var"


def setting(
    name: str,
    parse: Callable[[str], Any],
    meaning: str,
    *,
    default: Any = dataclasses.MISSING,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    from_file: bool = False,
) -> Any:
    """A `Settings` field together with its variable: declared once, read and written by name."""
    if shown is None:
        shown = f"`{_as_text(factory() if factory is not None else default)}`"
    var = Var(name, parse, shown, meaning, from_file)
    if factory is not None:
        return field(default_factory=factory, metadata={_VAR: var})
    return field(default=default, metadata={_VAR: var})


@dataclass(frozen=True)
class Settings:
    """Everything cardshare reads from its environment."""

    database_url: str | None = setting(
        "DATABASE_URL",
        _database_url,
        "PostgreSQL URL (`postgresql://user:pass@host/db`; psycopg 3 is used)",
        default=None,
        shown="embedded",
        from_file=True,
    )
    redis_url: str | None = setting(
        "REDIS_URL",
        _redis_url,
        "Redis URL for the Celery broker",
        default=None,
        shown="embedded",
        from_file=True,
    )
    linq_api_key: Secret = setting(
        "LINQ_API_V3_API_KEY",
        Secret,
        "Linq Partner API token, sent as a Bearer token",
        factory=lambda: Secret(""),
        shown="(required to share)",
        from_file=True,
    )
    linq_base_url: str = setting(
        "LINQ_API_V3_BASE_URL",
        _http_url,
        "Linq base URL (the simulator's for local use)",
        default=DEFAULT_BASE_URL,
    )
    timezone: str = setting(
        "CARDSHARE_TIMEZONE",
        str,
        'IANA zone whose calendar day is "a day" for a line without its own (`line set --timezone`)',
        default="UTC",
    )
    sweep_interval_s: float = setting(
        "CARDSHARE_SWEEP_INTERVAL", _positive_float, "seconds between sweeps", default=900.0
    )
    recover_interval_s: float = setting(
        "CARDSHARE_RECOVER_INTERVAL",
        _positive_float,
        "seconds between recovery passes",
        default=60.0,
    )
    lease_s: float = setting(
        "CARDSHARE_LEASE_SECONDS",
        _positive_float,
        "how long a claim holds a chat-day; with the recover interval it must stay under 300 s",
        default=120.0,
    )
    retry_attempts: int = setting(
        "CARDSHARE_RETRY_ATTEMPTS",
        _positive_int,
        "HTTP attempts per chat per run",
        default=4,
    )
    retry_budget_s: float = setting(
        "CARDSHARE_RETRY_BUDGET_SECONDS",
        _positive_float,
        "time budget for one run's retries; longer waits reschedule",
        default=30.0,
    )
    retry_base_s: float = setting(
        "CARDSHARE_RETRY_BASE_SECONDS",
        _positive_float,
        "first backoff ceiling (full jitter, doubling)",
        default=0.5,
    )
    retry_cap_s: float = setting(
        "CARDSHARE_RETRY_CAP_SECONDS",
        _positive_float,
        "largest backoff ceiling",
        default=8.0,
    )
    task_soft_time_limit_s: float = setting(
        "CARDSHARE_TASK_SOFT_TIME_LIMIT",
        _positive_float,
        "Celery soft limit (enforced by the prefork and gevent pools)",
        default=60.0,
    )
    task_time_limit_s: float = setting(
        "CARDSHARE_TASK_TIME_LIMIT", _positive_float, "Celery hard limit", default=90.0
    )
    visibility_timeout_s: float = setting(
        "CARDSHARE_VISIBILITY_TIMEOUT",
        _positive_float,
        "Redis redelivery timeout; far above lease and limits",
        default=3600.0,
    )
    http_connect_timeout_s: float = setting(
        "CARDSHARE_HTTP_CONNECT_TIMEOUT",
        _positive_float,
        "seconds to connect to Linq",
        default=5.0,
    )
    http_read_timeout_s: float = setting(
        "CARDSHARE_HTTP_READ_TIMEOUT",
        _positive_float,
        "seconds to wait for Linq's answer; after that the outcome is unknown",
        default=15.0,
    )
    active_days: int = setting(
        "CARDSHARE_ACTIVE_DAYS",
        _positive_int,
        "a chat needs an outbound message within this many days",
        default=30,
    )
    due_policy: str = setting(
        "CARDSHARE_DUE_POLICY",
        _due_policy,
        "which chats are due on a day: `active-window` (an outbound message within "
        "CARDSHARE_ACTIVE_DAYS) or `outbound-today` (an outbound message on that day, in the line's zone)",
        default="active-window",
    )
    share_on_outbound: bool = setting(
        "CARDSHARE_SHARE_ON_OUTBOUND",
        _bool,
        "the event path: outbound activity (webhook, sync, import) that makes a chat due queues its "
        "share at once; off, only the sweep does",
        default=True,
    )
    share_groups: bool = setting("CARDSHARE_SHARE_GROUPS", _bool, "share into group chats too", default=False)
    max_lost_claims: int = setting(
        "CARDSHARE_MAX_LOST_CLAIMS",
        _positive_int,
        "lost claims (crashes) before a chat-day fails as poison",
        default=3,
    )
    sweep_page_size: int = setting(
        "CARDSHARE_SWEEP_PAGE_SIZE",
        _positive_int,
        "chats per sweep page and per publish batch",
        default=1000,
    )
    worker_pool: str = setting(
        "CARDSHARE_WORKER_POOL",
        str,
        "Celery pool: `threads`, `gevent`, `prefork` or `solo`",
        default="threads",
    )
    worker_concurrency: int = setting(
        "CARDSHARE_WORKER_CONCURRENCY",
        _positive_int,
        "threads per worker process",
        default=64,
    )
    prefetch_multiplier: int = setting(
        "CARDSHARE_PREFETCH_MULTIPLIER",
        _positive_int,
        "messages prefetched per thread",
        default=1,
    )
    # None: one connection per worker thread (see `db_pool`).
    db_pool_size: int | None = setting(
        "CARDSHARE_DB_POOL_SIZE",
        _positive_int,
        "SQLAlchemy pool size per process (plus 10 overflow); connections open lazily",
        default=None,
        shown="worker concurrency",
    )
    data_dir: Path = setting(
        "CARDSHARE_DATA_DIR",
        Path,
        "embedded servers' data and beat's schedule file",
        factory=lambda: Path(".cardshare"),
    )
    log_level: str = setting(
        "CARDSHARE_LOG_LEVEL",
        _log_level,
        "`DEBUG`, `INFO`, `WARNING`, `ERROR`",
        default="INFO",
    )
    log_format: str = setting(
        "CARDSHARE_LOG_FORMAT",
        str,
        "`json`, `text`, or `auto` (JSON when not on a terminal)",
        default="auto",
    )
    # --- line safety (docs/decisions.md §10-§12)
    line_shares_per_minute: int = setting(
        "CARDSHARE_LINE_SHARES_PER_MINUTE",
        _non_negative_int,
        "cap on shares per line per rolling minute, across all workers and hosts (`cardshare line set "
        "--pace` overrides it per line; `0`: no cap)",
        default=60,
    )
    at_risk_shares_per_minute: int = setting(
        "CARDSHARE_AT_RISK_SHARES_PER_MINUTE",
        _non_negative_int,
        "the cap for a line Linq rates AT_RISK, when lower than its own (`0`: no reduction)",
        default=20,
    )
    account_shares_per_minute: int = setting(
        "CARDSHARE_ACCOUNT_SHARES_PER_MINUTE",
        _non_negative_int,
        "cap on shares per rolling minute for the whole account (`0`: none)",
        default=0,
    )
    release_interval_s: float = setting(
        "CARDSHARE_RELEASE_INTERVAL",
        _positive_float,
        "seconds between release passes, which publish held chat-days whose slot came or whose hold lifted",
        default=5.0,
    )
    status_counts_interval_s: float = setting(
        "CARDSHARE_STATUS_COUNTS_INTERVAL",
        _non_negative_float,
        "seconds between beat's count passes, which save today's chat-day counts for `status` and the "
        "status page (each pass reads the whole day once); readers use them while younger than 3 "
        "intervals. `0`: off, every `status` counts the day itself",
        default=30.0,
    )
    # --- ingestion (webhooks, sync, import)
    webhook_secrets: tuple[Secret, ...] = setting(
        "CARDSHARE_WEBHOOK_SECRETS",
        _webhook_secrets,
        "comma-separated `whsec_...` signing secrets of your Linq webhook subscriptions; several at once "
        "during a rotation. Never printed or logged",
        default=(),
        shown="(required by `cardshare webhooks`)",
        from_file=True,
    )
    webhook_legacy_signatures: bool = setting(
        "CARDSHARE_WEBHOOK_LEGACY_SIGNATURES",
        _bool,
        "also accept Linq's deprecated `X-Webhook-Signature` (hex HMAC) when the Standard Webhooks "
        "signature is absent or fails",
        default=False,
    )
    webhook_host: str = setting(
        "CARDSHARE_WEBHOOK_HOST",
        str,
        "address `cardshare webhooks` listens on (`0.0.0.0` behind a TLS proxy or in a container)",
        default="127.0.0.1",
    )
    webhook_port: int = setting(
        "CARDSHARE_WEBHOOK_PORT", _port, "port `cardshare webhooks` listens on", default=8080
    )
    webhook_header_timeout_s: float = setting(
        "CARDSHARE_WEBHOOK_HEADER_TIMEOUT",
        _positive_float,
        "seconds a client of `cardshare webhooks` (or `web`) has to send a request's headers; "
        "then the connection is closed",
        default=10.0,
    )
    webhook_body_timeout_s: float = setting(
        "CARDSHARE_WEBHOOK_BODY_TIMEOUT",
        _positive_float,
        "seconds the receiver waits for a webhook's whole body (at most 1 MiB, counted as it "
        "streams); then 408",
        default=10.0,
    )
    sync_interval_s: float = setting(
        "CARDSHARE_SYNC_INTERVAL",
        _positive_float,
        "seconds between chat syncs run by beat",
        default=86400.0,
    )
    sync_message_lookups: int = setting(
        "CARDSHARE_SYNC_MESSAGE_LOOKUPS",
        _non_negative_int,
        "message pages one sync may read looking for outbound messages (`0`: none)",
        default=1000,
    )
    # --- operations (metrics, health)
    metrics_host: str = setting(
        "CARDSHARE_METRICS_HOST",
        str,
        "address a worker serves Prometheus `/metrics` on (`0.0.0.0` in a container, so Prometheus can "
        "scrape it)",
        default="127.0.0.1",
    )
    metrics_port: int = setting(
        "CARDSHARE_METRICS_PORT",
        _port,
        "port of a worker's `/metrics` (`0`: no metrics server); a worker that finds it taken logs "
        "`metrics.unavailable` and keeps sharing",
        default=9808,
    )
    task_events: bool = setting(
        "CARDSHARE_TASK_EVENTS",
        _bool,
        "workers send Celery task events (received, started, succeeded...) and publishers `task-sent`, "
        "for Flower and celery-exporter; the cost is measured in bench/README.md",
        default=False,
    )
    shutdown_timeout_s: float = setting(
        "CARDSHARE_SHUTDOWN_TIMEOUT",
        _non_negative_float,
        "seconds a stopping worker (SIGTERM) lets in-flight shares run before it hands their chat-days "
        "back (released, and re-queued); Celery's `worker_soft_shutdown_timeout`. Keep it under the "
        "grace period before SIGKILL (Kubernetes `terminationGracePeriodSeconds`, compose "
        "`stop_grace_period`)",
        default=60.0,
    )
    # --- observability extras (worker/ops/observability.py): off unless their variable is set
    sentry_dsn: Secret = setting(
        "SENTRY_DSN",
        Secret,
        "switches Sentry on (needs `cardshare[sentry]`): errors of workers, beat and the receiver, and "
        "beat's schedule as cron monitors. Never printed or logged",
        factory=lambda: Secret(""),
        shown="unset (off)",
        from_file=True,
    )
    sentry_environment: str = setting(
        "CARDSHARE_SENTRY_ENVIRONMENT",
        str,
        "Sentry's `environment` tag (e.g. `production`)",
        default="",
        shown="unset",
    )
    sentry_traces_sample_rate: float = setting(
        "CARDSHARE_SENTRY_TRACES_SAMPLE_RATE",
        _ratio,
        "share of task runs Sentry traces (0 to 1; errors are always sent)",
        default=0.0,
    )
    sentry_monitors: bool = setting(
        "CARDSHARE_SENTRY_MONITORS",
        _bool,
        "report beat's sweep, recovery and sync as Sentry cron monitors (check-ins)",
        default=True,
    )
    otel_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        _http_url,
        "switches OpenTelemetry tracing on (needs `cardshare[otel]`): spans over OTLP/HTTP to this collector "
        "(`/v1/traces` is added); the SDK reads its other `OTEL_*` variables itself",
        default=None,
        shown="unset (off)",
    )
    otel_sample_ratio: float = setting(
        "CARDSHARE_OTEL_SAMPLE_RATIO",
        _ratio,
        "share of traces kept (0 to 1), parent-based",
        default=1.0,
    )
    health_stall_minutes: float = setting(
        "CARDSHARE_HEALTH_STALL_MINUTES",
        _positive_float,
        "`cardshare health` fails when messages wait and the worker finished no task for this long",
        default=5.0,
    )
    # --- retention (day partitions, audit)
    retention_days: int = setting(
        "CARDSHARE_RETENTION_DAYS",
        _positive_int,
        "days of `share_days` and `attempts` kept before today; older days' partitions are detached "
        "and dropped by beat's hourly maintenance, and `check`, `status` and `history` say a day is past "
        "retention",
        default=90,
    )
    audit_retention_days: int = setting(
        "CARDSHARE_AUDIT_RETENTION_DAYS",
        _positive_int,
        "days of `audit_events` (operator actions, refused shares, imports) kept; older ones are deleted "
        "by the same maintenance",
        default=365,
    )

    def __post_init__(self) -> None:
        self.validate()

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def variables() -> Iterator[tuple[str, Var]]:
        """(field name, its variable) for every setting, in declaration order."""
        for f in dataclasses.fields(Settings):
            yield f.name, f.metadata[_VAR]

    @staticmethod
    def env_name(attr: str) -> str:
        """The environment variable of the field `attr`."""
        var: Var = next(f.metadata[_VAR] for f in dataclasses.fields(Settings) if f.name == attr)
        return var.name

    def validate(self) -> None:
        """Reject combinations that would break the cadence or the crash recovery."""
        name = Settings.env_name
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(name("timezone"), f"unknown IANA time zone {self.timezone!r}") from exc
        # The order that keeps a running task from being taken over or redelivered under it.
        chain = [
            (name(attr), getattr(self, attr))
            for attr in ("retry_budget_s", "task_soft_time_limit_s", "task_time_limit_s", "lease_s")
        ] + [(name("visibility_timeout_s"), self.visibility_timeout_s)]
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(chain):
            if not lo < hi:
                raise ConfigError(hi_name, f"must be greater than {lo_name} ({hi} <= {lo})")
        # A task can run for its whole budget plus one last read timeout.
        worst = self.retry_budget_s + self.http_read_timeout_s + self.http_connect_timeout_s
        if worst >= self.task_soft_time_limit_s:
            raise ConfigError(
                name("task_soft_time_limit_s"),
                f"must exceed retry budget + HTTP timeouts ({worst:g}s)",
            )
        if self.lease_s + self.recover_interval_s >= LINQ_SHARE_WINDOW_S:
            raise ConfigError(
                name("lease_s"),
                "lease + recover interval must stay under Linq's 5-minute share window",
            )
        if self.retry_attempts < 1:
            raise ConfigError(name("retry_attempts"), "must be at least 1")
        if self.worker_pool not in {"threads", "gevent", "prefork", "solo"}:
            raise ConfigError(name("worker_pool"), "must be threads, gevent, prefork or solo")
        if self.log_format not in {"auto", "json", "text"}:
            raise ConfigError(name("log_format"), "must be auto, json or text")
        if self.active_days < 1:
            raise ConfigError(name("active_days"), "must be at least 1")
        if self.release_interval_s > self.recover_interval_s:
            raise ConfigError(
                name("release_interval_s"),
                f"must not exceed {name('recover_interval_s')}: slots are handed out at this interval",
            )
        # --- ingestion (webhooks, sync, import)
        for position, secret in enumerate(self.webhook_secrets, 1):
            _check_webhook_secret(secret.get(), position, legacy=self.webhook_legacy_signatures)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default `os.environ`); ConfigError names the bad variable.

        Call it once, at the process's entry point, and hand the result down."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for attr, var in cls.variables():
            raw = env.get(var.name)
            path = env.get(var.file_name, "").strip() if var.from_file else ""
            if path:
                if raw is not None and raw.strip():
                    raise ConfigError(var.file_name, f"and {var.name} are both set: give one")
                try:
                    raw = Path(path).read_text()
                except OSError as exc:
                    raise ConfigError(var.file_name, f"cannot read {path!r}: {exc.strerror or exc}") from None
            if raw is None or raw.strip() == "":
                continue
            try:
                kw[attr] = var.parse(raw.strip())
            except (ValueError, TypeError) as exc:
                if path:  # a secret's file: say what is wrong, never what it holds
                    raise ConfigError(
                        var.file_name, f"the content of {path!r} cannot be used: {exc}"
                    ) from None
                # A URL may carry a password, malformed or not: never echo it as given.
                shown = mask_url(raw.strip()) if var.name.endswith("_URL") else raw.strip()
                raise ConfigError(var.name, f"cannot parse {shown!r}: {exc}") from None
        return cls(**kw)

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a child process (includes secrets)."""
        env: dict[str, str] = {}
        for attr, var in self.variables():
            value = getattr(self, attr)
            if value is None or (isinstance(value, Secret | tuple) and not value):
                continue
            env[var.name] = _as_text(value)
        return env

    @property
    def db_pool(self) -> int:
        """Connections a process keeps. A pool smaller than the threads that use it churns:
        each burst past it opens an overflow connection (a PostgreSQL backend fork) and closes
        it on return; at 20 for 100 threads that was one new connection per 7 shares."""
        return self.db_pool_size or self.worker_concurrency

    def require_api_key(self) -> str:
        if not self.linq_api_key:
            raise ConfigError(
                self.env_name("linq_api_key"), "is not set; cardshare cannot call Linq without it"
            )
        return self.linq_api_key.get()


# Variable -> field, every setting.
ENV_NAMES: dict[str, str] = {var.name: attr for attr, var in Settings.variables()}


def readme_rows() -> list[str]:
    """The README's configuration table rows for every setting, in declaration order."""
    return [var.readme_row() for _, var in Settings.variables()]


if __name__ == "__main__":
    # `python -m worker.config`: the configuration table's setting rows, for the README.
    sys.stdout.write("\n".join(readme_rows()) + "\n")
