from __future__ import annotations

import pytest

from worker.config import Secret, Settings, mask_url
from worker.errors import ConfigError


def test_defaults_are_valid_and_ordered() -> None:
    s = Settings()
    assert (
        s.retry_budget_s < s.task_soft_time_limit_s < s.task_time_limit_s < s.lease_s < s.visibility_timeout_s
    )
    assert s.timezone == "UTC"
    assert s.sweep_interval_s == 900
    assert s.embedded


def test_from_env_reads_every_variable() -> None:
    env = {
        "DATABASE_URL": "postgresql://u:pw@db:5432/cardshare",
        "REDIS_URL": "redis://redis:6379/1",
        "LINQ_API_V3_API_KEY": "sk_live_abcdef",
        "LINQ_API_V3_BASE_URL": "http://127.0.0.1:9/api/partner/",
        "CARDSHARE_TIMEZONE": "America/New_York",
        "CARDSHARE_SWEEP_INTERVAL": "600",
        "CARDSHARE_RETRY_ATTEMPTS": "3",
        "CARDSHARE_SHARE_GROUPS": "true",
        "CARDSHARE_WORKER_CONCURRENCY": "32",
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql+psycopg://u:pw@db:5432/cardshare"
    assert s.redis_url == "redis://redis:6379/1"
    assert s.linq_api_key.get() == "sk_live_abcdef"
    assert s.linq_base_url == "http://127.0.0.1:9/api/partner"
    assert s.timezone == "America/New_York"
    assert s.sweep_interval_s == 600
    assert s.retry_attempts == 3
    assert s.share_groups is True
    assert s.worker_concurrency == 32
    assert not s.embedded


def test_secrets_never_show_in_repr() -> None:
    s = Settings.from_env({"LINQ_API_V3_API_KEY": "sk_live_supersecret"})
    assert "supersecret" not in repr(s)
    assert "supersecret" not in str(s.linq_api_key)
    assert repr(Secret("x")) == "Secret('****')"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CARDSHARE_SWEEP_INTERVAL": "soon"}, "CARDSHARE_SWEEP_INTERVAL"),
        ({"CARDSHARE_SWEEP_INTERVAL": "-5"}, "CARDSHARE_SWEEP_INTERVAL"),
        ({"CARDSHARE_TIMEZONE": "Mars/Olympus"}, "CARDSHARE_TIMEZONE"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"LINQ_API_V3_BASE_URL": "ftp://x"}, "LINQ_API_V3_BASE_URL"),
        ({"CARDSHARE_SHARE_GROUPS": "maybe"}, "CARDSHARE_SHARE_GROUPS"),
        ({"CARDSHARE_LEASE_SECONDS": "30"}, "CARDSHARE_LEASE_SECONDS"),  # below the hard time limit
        ({"CARDSHARE_LEASE_SECONDS": "280"}, "CARDSHARE_LEASE_SECONDS"),  # + recover >= Linq's 5 minutes
        ({"CARDSHARE_RETRY_BUDGET_SECONDS": "70"}, "CARDSHARE_TASK_SOFT_TIME_LIMIT"),
        ({"CARDSHARE_WORKER_POOL": "eventlet"}, "CARDSHARE_WORKER_POOL"),
        ({"CARDSHARE_LOG_LEVEL": "chatty"}, "CARDSHARE_LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)
    assert "\n" not in str(info.value)


def test_blank_values_mean_default() -> None:
    assert Settings.from_env({"CARDSHARE_TIMEZONE": "  "}).timezone == "UTC"


def test_the_db_pool_follows_the_concurrency_unless_set() -> None:
    # One connection per thread: a smaller pool churns connections under load.
    assert Settings.from_env({"CARDSHARE_WORKER_CONCURRENCY": "100"}).db_pool == 100
    assert Settings.from_env({}).db_pool == Settings().worker_concurrency
    pinned = Settings.from_env({"CARDSHARE_WORKER_CONCURRENCY": "100", "CARDSHARE_DB_POOL_SIZE": "30"})
    assert pinned.db_pool == 30


def test_mask_url() -> None:
    assert mask_url("postgresql+psycopg://u:pw@db/x") == "postgresql+psycopg://u:****@db/x"
    assert mask_url("redis://db:6379/0") == "redis://db:6379/0"


def test_to_env_round_trips_and_covers_every_variable() -> None:
    from worker.config import ENV_NAMES

    s = Settings(
        database_url="postgresql+psycopg://u:p@h/db",
        redis_url="redis://h:1/2",
        linq_api_key=Secret("k-123456"),
        timezone="Europe/Paris",
        share_groups=True,
        worker_concurrency=7,
        retry_base_s=0.25,
        webhook_secrets=(Secret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),),
        sync_message_lookups=0,
        sentry_dsn=Secret("https://public@sentry.example.com/1"),
        otel_endpoint="http://collector:4318",
    )
    env = s.to_env()
    assert Settings.from_env(env) == s
    # Every declared variable is written, except the one left unset (None: "the concurrency").
    assert set(env) == set(ENV_NAMES) - {"CARDSHARE_DB_POOL_SIZE"}
    assert {var.name: attr for attr, var in Settings.variables()} == ENV_NAMES
    assert Settings.env_name("lease_s") == "CARDSHARE_LEASE_SECONDS"
