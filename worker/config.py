"""Settings from the environment, in one place.

`Settings.from_env(os.environ)` in production, `Settings(...)` in tests. Every field is a row
in the README's configuration table. Secrets are masked in `repr` so a stray log of the object
leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import os
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from worker.errors import ConfigError

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.linqapp.com/api/partner"

# Linq allows one share per chat per 5 minutes; a crashed chat-day must be taken over inside
# that window so the 429 on the retry can confirm the first share (decisions.md, rule 3).
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


@dataclass(frozen=True)
class Settings:
    """Everything cardshare reads from its environment."""

    database_url: str | None = None
    redis_url: str | None = None
    linq_api_key: Secret = field(default_factory=lambda: Secret(""))
    linq_base_url: str = DEFAULT_BASE_URL
    timezone: str = "UTC"
    sweep_interval_s: float = 900.0
    recover_interval_s: float = 60.0
    lease_s: float = 120.0
    retry_attempts: int = 4
    retry_budget_s: float = 30.0
    retry_base_s: float = 0.5
    retry_cap_s: float = 8.0
    task_soft_time_limit_s: float = 60.0
    task_time_limit_s: float = 90.0
    visibility_timeout_s: float = 3600.0
    http_connect_timeout_s: float = 5.0
    http_read_timeout_s: float = 15.0
    active_days: int = 30
    share_groups: bool = False
    max_lost_claims: int = 3
    sweep_page_size: int = 1000
    worker_pool: str = "threads"
    worker_concurrency: int = 64
    prefetch_multiplier: int = 1
    # None: one connection per worker thread (see `db_pool`).
    db_pool_size: int | None = None
    data_dir: Path = field(default_factory=lambda: Path(".cardshare"))
    log_level: str = "INFO"
    log_format: str = "auto"
    # --- ingestion (webhooks, sync, import)
    webhook_secrets: tuple[Secret, ...] = ()
    webhook_legacy_signatures: bool = False
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    sync_interval_s: float = 86400.0
    sync_message_lookups: int = 1000
    # --- operations (metrics, health)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9808
    health_stall_minutes: float = 5.0

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

    def validate(self) -> None:
        """Reject combinations that would break the cadence or the crash recovery."""
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError("CARDSHARE_TIMEZONE", f"unknown IANA time zone {self.timezone!r}") from exc
        # The order that keeps a running task from being taken over or redelivered under it.
        chain = [
            ("CARDSHARE_RETRY_BUDGET_SECONDS", self.retry_budget_s),
            ("CARDSHARE_TASK_SOFT_TIME_LIMIT", self.task_soft_time_limit_s),
            ("CARDSHARE_TASK_TIME_LIMIT", self.task_time_limit_s),
            ("CARDSHARE_LEASE_SECONDS", self.lease_s),
            ("CARDSHARE_VISIBILITY_TIMEOUT", self.visibility_timeout_s),
        ]
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(chain):
            if not lo < hi:
                raise ConfigError(hi_name, f"must be greater than {lo_name} ({hi} <= {lo})")
        # A task can run for its whole budget plus one last read timeout.
        worst = self.retry_budget_s + self.http_read_timeout_s + self.http_connect_timeout_s
        if worst >= self.task_soft_time_limit_s:
            raise ConfigError(
                "CARDSHARE_TASK_SOFT_TIME_LIMIT",
                f"must exceed retry budget + HTTP timeouts ({worst:g}s)",
            )
        if self.lease_s + self.recover_interval_s >= LINQ_SHARE_WINDOW_S:
            raise ConfigError(
                "CARDSHARE_LEASE_SECONDS",
                "lease + recover interval must stay under Linq's 5-minute share window",
            )
        if self.retry_attempts < 1:
            raise ConfigError("CARDSHARE_RETRY_ATTEMPTS", "must be at least 1")
        if self.worker_pool not in {"threads", "gevent", "prefork", "solo"}:
            raise ConfigError("CARDSHARE_WORKER_POOL", "must be threads, gevent, prefork or solo")
        if self.log_format not in {"auto", "json", "text"}:
            raise ConfigError("CARDSHARE_LOG_FORMAT", "must be auto, json or text")
        if self.active_days < 1:
            raise ConfigError("CARDSHARE_ACTIVE_DAYS", "must be at least 1")
        # --- ingestion (webhooks, sync, import)
        for position, secret in enumerate(self.webhook_secrets, 1):
            _check_webhook_secret(secret.get(), position, legacy=self.webhook_legacy_signatures)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default `os.environ`); ConfigError names the bad variable."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}

        def take(name: str, attr: str, conv: Callable[[str], Any]) -> None:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return
            try:
                kw[attr] = conv(raw.strip())
            except (ValueError, TypeError) as exc:
                raise ConfigError(name, f"cannot parse {raw.strip()!r}: {exc}") from None

        take("DATABASE_URL", "database_url", _database_url)
        take("REDIS_URL", "redis_url", _redis_url)
        take("LINQ_API_V3_API_KEY", "linq_api_key", Secret)
        take("LINQ_API_V3_BASE_URL", "linq_base_url", _http_url)
        take("CARDSHARE_TIMEZONE", "timezone", str)
        take("CARDSHARE_SWEEP_INTERVAL", "sweep_interval_s", _positive_float)
        take("CARDSHARE_RECOVER_INTERVAL", "recover_interval_s", _positive_float)
        take("CARDSHARE_LEASE_SECONDS", "lease_s", _positive_float)
        take("CARDSHARE_RETRY_ATTEMPTS", "retry_attempts", _positive_int)
        take("CARDSHARE_RETRY_BUDGET_SECONDS", "retry_budget_s", _positive_float)
        take("CARDSHARE_RETRY_BASE_SECONDS", "retry_base_s", _positive_float)
        take("CARDSHARE_RETRY_CAP_SECONDS", "retry_cap_s", _positive_float)
        take("CARDSHARE_TASK_SOFT_TIME_LIMIT", "task_soft_time_limit_s", _positive_float)
        take("CARDSHARE_TASK_TIME_LIMIT", "task_time_limit_s", _positive_float)
        take("CARDSHARE_VISIBILITY_TIMEOUT", "visibility_timeout_s", _positive_float)
        take("CARDSHARE_HTTP_CONNECT_TIMEOUT", "http_connect_timeout_s", _positive_float)
        take("CARDSHARE_HTTP_READ_TIMEOUT", "http_read_timeout_s", _positive_float)
        take("CARDSHARE_ACTIVE_DAYS", "active_days", _positive_int)
        take("CARDSHARE_SHARE_GROUPS", "share_groups", _bool)
        take("CARDSHARE_MAX_LOST_CLAIMS", "max_lost_claims", _positive_int)
        take("CARDSHARE_SWEEP_PAGE_SIZE", "sweep_page_size", _positive_int)
        take("CARDSHARE_WORKER_POOL", "worker_pool", str)
        take("CARDSHARE_WORKER_CONCURRENCY", "worker_concurrency", _positive_int)
        take("CARDSHARE_PREFETCH_MULTIPLIER", "prefetch_multiplier", _positive_int)
        take("CARDSHARE_DB_POOL_SIZE", "db_pool_size", _positive_int)
        take("CARDSHARE_DATA_DIR", "data_dir", Path)
        take("CARDSHARE_LOG_LEVEL", "log_level", _log_level)
        take("CARDSHARE_LOG_FORMAT", "log_format", str)
        # --- ingestion (webhooks, sync, import)
        take("CARDSHARE_WEBHOOK_SECRETS", "webhook_secrets", _webhook_secrets)
        take("CARDSHARE_WEBHOOK_LEGACY_SIGNATURES", "webhook_legacy_signatures", _bool)
        take("CARDSHARE_WEBHOOK_HOST", "webhook_host", str)
        take("CARDSHARE_WEBHOOK_PORT", "webhook_port", _port)
        take("CARDSHARE_SYNC_INTERVAL", "sync_interval_s", _positive_float)
        take("CARDSHARE_SYNC_MESSAGE_LOOKUPS", "sync_message_lookups", _non_negative_int)
        # --- operations (metrics, health)
        take("CARDSHARE_METRICS_HOST", "metrics_host", str)
        take("CARDSHARE_METRICS_PORT", "metrics_port", _port)
        take("CARDSHARE_HEALTH_STALL_MINUTES", "health_stall_minutes", _positive_float)
        return cls(**kw)

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a child process (includes secrets)."""
        env: dict[str, str] = {}
        for name, attr in ENV_NAMES.items():
            value = getattr(self, attr)
            if value is None:
                continue
            if isinstance(value, Secret):
                if not value:
                    continue
                text = value.get()
            elif isinstance(value, tuple):
                if not value:
                    continue
                text = ",".join(v.get() if isinstance(v, Secret) else str(v) for v in value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[name] = text
        return env

    @property
    def db_pool(self) -> int:
        """Connections a process keeps. A pool smaller than the threads that use it churns:
        each burst past it opens an overflow connection (a PostgreSQL backend fork) and closes
        it on return; at 20 for 100 threads that was one new connection per 7 shares."""
        return self.db_pool_size or self.worker_concurrency

    def require_api_key(self) -> str:
        if not self.linq_api_key:
            raise ConfigError("LINQ_API_V3_API_KEY", "is not set; cardshare cannot call Linq without it")
        return self.linq_api_key.get()


# Variable -> field, for to_env(); a unit test keeps it in step with from_env().
ENV_NAMES: dict[str, str] = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "LINQ_API_V3_API_KEY": "linq_api_key",
    "LINQ_API_V3_BASE_URL": "linq_base_url",
    "CARDSHARE_TIMEZONE": "timezone",
    "CARDSHARE_SWEEP_INTERVAL": "sweep_interval_s",
    "CARDSHARE_RECOVER_INTERVAL": "recover_interval_s",
    "CARDSHARE_LEASE_SECONDS": "lease_s",
    "CARDSHARE_RETRY_ATTEMPTS": "retry_attempts",
    "CARDSHARE_RETRY_BUDGET_SECONDS": "retry_budget_s",
    "CARDSHARE_RETRY_BASE_SECONDS": "retry_base_s",
    "CARDSHARE_RETRY_CAP_SECONDS": "retry_cap_s",
    "CARDSHARE_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit_s",
    "CARDSHARE_TASK_TIME_LIMIT": "task_time_limit_s",
    "CARDSHARE_VISIBILITY_TIMEOUT": "visibility_timeout_s",
    "CARDSHARE_HTTP_CONNECT_TIMEOUT": "http_connect_timeout_s",
    "CARDSHARE_HTTP_READ_TIMEOUT": "http_read_timeout_s",
    "CARDSHARE_ACTIVE_DAYS": "active_days",
    "CARDSHARE_SHARE_GROUPS": "share_groups",
    "CARDSHARE_MAX_LOST_CLAIMS": "max_lost_claims",
    "CARDSHARE_SWEEP_PAGE_SIZE": "sweep_page_size",
    "CARDSHARE_WORKER_POOL": "worker_pool",
    "CARDSHARE_WORKER_CONCURRENCY": "worker_concurrency",
    "CARDSHARE_PREFETCH_MULTIPLIER": "prefetch_multiplier",
    "CARDSHARE_DB_POOL_SIZE": "db_pool_size",
    "CARDSHARE_DATA_DIR": "data_dir",
    "CARDSHARE_LOG_LEVEL": "log_level",
    "CARDSHARE_LOG_FORMAT": "log_format",
    "CARDSHARE_WEBHOOK_SECRETS": "webhook_secrets",
    "CARDSHARE_WEBHOOK_LEGACY_SIGNATURES": "webhook_legacy_signatures",
    "CARDSHARE_WEBHOOK_HOST": "webhook_host",
    "CARDSHARE_WEBHOOK_PORT": "webhook_port",
    "CARDSHARE_SYNC_INTERVAL": "sync_interval_s",
    "CARDSHARE_SYNC_MESSAGE_LOOKUPS": "sync_message_lookups",
    "CARDSHARE_METRICS_HOST": "metrics_host",
    "CARDSHARE_METRICS_PORT": "metrics_port",
    "CARDSHARE_HEALTH_STALL_MINUTES": "health_stall_minutes",
}


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
    name = "CARDSHARE_WEBHOOK_SECRETS"
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


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _database_url(raw: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if raw.startswith(prefix):
            # One driver everywhere: psycopg 3.
            return "postgresql+psycopg://" + raw[len(prefix) :]
    raise ValueError("must be a postgresql:// URL")


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis:// URL")
    return raw


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return raw.rstrip("/")


def mask_url(url: str) -> str:
    """Hide the password of a URL for display."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:****@{host}" if ":" in creds else url
