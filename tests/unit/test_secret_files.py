"""Secrets from files (`NAME_FILE`, as Kubernetes and compose mount secrets): read once like the
variable itself, never both, and an error names the variable and the path, never the content."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import Settings
from worker.errors import ConfigError

WHSEC = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def test_each_secret_can_come_from_a_file(tmp_path: Path) -> None:
    files = {
        "DATABASE_URL_FILE": "postgresql://cardshare:s3cr3t-pw@db/cardshare\n",
        "REDIS_URL_FILE": "redis://:r3dis-pw@redis:6379/0\n",
        "LINQ_API_V3_API_KEY_FILE": "linq-key-from-a-file\n",
        "CARDSHARE_WEBHOOK_SECRETS_FILE": f"{WHSEC}\n",
        "SENTRY_DSN_FILE": "https://public@sentry.example.com/1",
    }
    env = {}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
        env[name] = str(tmp_path / name)
    s = Settings.from_env(env)
    assert s.database_url == "postgresql+psycopg://cardshare:s3cr3t-pw@db/cardshare"
    assert s.redis_url == "redis://:r3dis-pw@redis:6379/0"
    assert s.linq_api_key.get() == "linq-key-from-a-file"
    assert [w.get() for w in s.webhook_secrets] == [WHSEC]
    assert s.sentry_dsn.get() == "https://public@sentry.example.com/1"
    assert "linq-key-from-a-file" not in repr(s)
    # Children get the values themselves (they may not see the mounted files).
    assert Settings.from_env(s.to_env()) == s


def test_a_variable_and_its_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-file")
    with pytest.raises(ConfigError) as err:
        Settings.from_env(
            {"LINQ_API_V3_API_KEY": "from-env", "LINQ_API_V3_API_KEY_FILE": str(tmp_path / "key")}
        )
    assert str(err.value).startswith("LINQ_API_V3_API_KEY_FILE")
    assert "both set" in str(err.value)


def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"DATABASE_URL_FILE": str(missing)})
    assert str(err.value).startswith("DATABASE_URL_FILE")
    assert str(missing) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_secret_in_a_file_is_never_printed(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("mysql://root:hunter2-very-secret@db/x")
    (tmp_path / "hooks").write_text("not-a-whsec-hunter3")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"DATABASE_URL_FILE": str(tmp_path / "db")})
    assert "hunter2" not in str(err.value)
    assert "must be a postgresql:// URL" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"CARDSHARE_WEBHOOK_SECRETS_FILE": str(tmp_path / "hooks")})
    assert "hunter3" not in str(err.value)
    assert "secret #1" in str(err.value)


def test_only_secrets_read_files() -> None:
    assert Settings.from_env({"CARDSHARE_TIMEZONE_FILE": "/nonexistent"}).timezone == "UTC"
