"""Ingestion settings: webhook secrets (several, validated, never printed), receiver address, sync."""

from __future__ import annotations

import pytest

from worker.config import Secret, Settings
from worker.errors import ConfigError

A = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
B = "whsec_ZmVkY2JhOTg3NjU0MzIxMA"  # unpadded base64 is accepted, as by standardwebhooks


def test_defaults() -> None:
    s = Settings()
    assert s.webhook_secrets == ()
    assert s.webhook_legacy_signatures is False
    assert (s.webhook_host, s.webhook_port) == ("127.0.0.1", 8080)
    assert s.sync_interval_s == 86400
    assert s.sync_message_lookups == 1000


def test_from_env_reads_the_ingestion_variables() -> None:
    s = Settings.from_env(
        {
            "CARDSHARE_WEBHOOK_SECRETS": f" {A} , {B},",
            "CARDSHARE_WEBHOOK_LEGACY_SIGNATURES": "yes",
            "CARDSHARE_WEBHOOK_HOST": "0.0.0.0",
            "CARDSHARE_WEBHOOK_PORT": "9000",
            "CARDSHARE_SYNC_INTERVAL": "3600",
            "CARDSHARE_SYNC_MESSAGE_LOOKUPS": "0",
        }
    )
    assert [x.get() for x in s.webhook_secrets] == [A, B]
    assert s.webhook_legacy_signatures is True
    assert (s.webhook_host, s.webhook_port) == ("0.0.0.0", 9000)
    assert s.sync_interval_s == 3600
    assert s.sync_message_lookups == 0
    assert A not in repr(s)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sk_not_a_webhook_secret", "secret #1 does not start with whsec_"),
        (f"{A},whsec_***", "secret #2 is not whsec_ followed by base64"),
        ("whsec_", "secret #1 is empty after whsec_"),
    ],
)
def test_bad_secrets_name_their_position_never_their_value(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CARDSHARE_WEBHOOK_SECRETS": value})
    text = str(info.value)
    assert text.startswith("CARDSHARE_WEBHOOK_SECRETS ")
    assert message in text
    for secret in filter(None, (part.removeprefix("whsec_") for part in value.split(","))):
        assert secret not in text


def test_a_plain_secret_is_allowed_for_the_legacy_scheme() -> None:
    s = Settings(webhook_secrets=(Secret("plain-old-secret"),), webhook_legacy_signatures=True)
    assert s.webhook_secrets[0].get() == "plain-old-secret"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CARDSHARE_WEBHOOK_PORT", "70000"),
        ("CARDSHARE_WEBHOOK_PORT", "http"),
        ("CARDSHARE_SYNC_INTERVAL", "0"),
        ("CARDSHARE_SYNC_MESSAGE_LOOKUPS", "-1"),
        ("CARDSHARE_WEBHOOK_LEGACY_SIGNATURES", "sometimes"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} cannot parse"):
        Settings.from_env({name: value})
