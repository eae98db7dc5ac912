"""Signature verification: the reference test vector, tampering, stale and future timestamps,
rotation, and the legacy scheme only when it is turned on."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
import standardwebhooks.webhooks
from standardwebhooks import Webhook

from worker.errors import ConfigError
from worker.ingest.webhooks import Rejected, Verifier, legacy_signature
from worker.simulator.webhooks import signed_headers

# docs/linq-contract.md §7.4: a test vector we computed from the rules (key bytes 0x00..0x1f).
SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
VECTOR_ID = "6f1c2a9e-3b7d-4e51-9c0a-2d8e4f7b1a35"
VECTOR_TS = 1772463845
VECTOR_BODY = b'{"event_id":"6f1c2a9e-3b7d-4e51-9c0a-2d8e4f7b1a35","event_type":"message.sent"}'
VECTOR_SIG = "v1,O34EDkidQhmR2Kl6NqzpR7FyRa9Uq1DI5sPJIkoAAl8="
VECTOR_LEGACY_WHOLE = "779d257944c1171b9a33720b6df0d0428976f37e1ae735a8fb826f536cc51a86"
VECTOR_LEGACY_DECODED = "7dbd1c468cbadfc93a650005c856b3683e0c6c7f8fa1685ff19e054eca15033e"
OTHER = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()


def vector_headers() -> dict[str, str]:
    return {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIG}


def fresh(secret: str = SECRET, body: bytes = VECTOR_BODY, *, ts: int | None = None) -> dict[str, str]:
    return signed_headers(secret, VECTOR_ID, int(time.time()) if ts is None else ts, body)


def standard_only(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith("x-")}


def legacy_only(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith("webhook-")}


@pytest.fixture
def pinned_library_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """standardwebhooks reads datetime.now() itself; pin it 10 s after the vector's timestamp."""

    class Pinned(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Pinned:
            return cls.fromtimestamp(VECTOR_TS + 10, tz)

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Pinned)


def test_the_library_reproduces_the_reference_vector() -> None:
    when = dt.datetime.fromtimestamp(VECTOR_TS, dt.UTC)
    assert Webhook(SECRET).sign(VECTOR_ID, when, VECTOR_BODY.decode()) == VECTOR_SIG


def test_the_reference_vector_verifies_with_the_clock_at_its_time(pinned_library_clock: None) -> None:
    verified = Verifier([SECRET]).verify(VECTOR_BODY, vector_headers(), now=VECTOR_TS + 10)
    assert verified.scheme == "standard"
    assert verified.webhook_id == VECTOR_ID
    assert verified.delivery == f"{VECTOR_ID}.{VECTOR_TS}"


def test_the_reference_vector_is_stale_today() -> None:
    with pytest.raises(Rejected, match="more than 5 minutes old"):
        Verifier([SECRET]).verify(VECTOR_BODY, vector_headers(), now=time.time())


@pytest.mark.parametrize(
    ("key", "expected"),
    [(SECRET.encode(), VECTOR_LEGACY_WHOLE), (bytes(range(32)), VECTOR_LEGACY_DECODED)],
)
def test_legacy_scheme_reproduces_the_reference_vector(key: bytes, expected: str) -> None:
    assert legacy_signature(key, VECTOR_TS, VECTOR_BODY) == expected


@pytest.mark.parametrize("signature", [VECTOR_LEGACY_WHOLE, VECTOR_LEGACY_DECODED])
def test_legacy_vector_is_accepted_only_when_enabled(signature: str) -> None:
    headers = {"x-webhook-timestamp": str(VECTOR_TS), "x-webhook-signature": signature}
    verified = Verifier([SECRET], legacy=True).verify(VECTOR_BODY, headers, now=VECTOR_TS + 10)
    assert verified.scheme == "legacy"
    assert verified.delivery == f"legacy.{VECTOR_TS}"
    with pytest.raises(Rejected, match="CARDSHARE_WEBHOOK_LEGACY_SIGNATURES is off"):
        Verifier([SECRET]).verify(VECTOR_BODY, headers, now=VECTOR_TS + 10)


def test_a_current_signature_is_accepted() -> None:
    verified = Verifier([SECRET]).verify(VECTOR_BODY, fresh(), now=time.time())
    assert verified.scheme == "standard"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda b, h: (b.replace(b"sent", b"recv"), h), "matches none of the configured secrets"),
        (lambda b, h: (b + b" ", h), "matches none of the configured secrets"),
        (lambda b, h: (b, {**h, "webhook-id": "another-id"}), "matches none of the configured secrets"),
        (
            lambda b, h: (b, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) - 1)}),
            "matches none of the configured secrets",
        ),
        (
            lambda b, h: (b, {**h, "webhook-signature": h["webhook-signature"][:-6] + "AAAAA="}),
            "matches none",
        ),
        (lambda b, h: (b, {**h, "webhook-signature": "v1"}), "malformed"),
        (lambda b, h: (b, {**h, "webhook-signature": "v1,not*base64"}), "malformed"),
        (lambda b, h: (b, {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}), "matches none"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}), "missing webhook-id"),
        (lambda b, h: (b, {**h, "webhook-timestamp": "yesterday"}), "not a Unix time"),
        (lambda b, h: (b"\xff" + b, h), "not UTF-8"),
    ],
)
def test_tampering_is_rejected_with_a_reason(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    body, headers = tamper(VECTOR_BODY, standard_only(fresh()))
    with pytest.raises(Rejected, match=reason):
        Verifier([SECRET]).verify(body, headers, now=time.time())


@pytest.mark.parametrize(("offset", "reason"), [(-301, "5 minutes old"), (+301, "5 minutes in the future")])
def test_timestamps_more_than_five_minutes_off_are_rejected(offset: int, reason: str) -> None:
    headers = fresh(ts=int(time.time()) + offset)
    with pytest.raises(Rejected, match=reason):
        Verifier([SECRET]).verify(VECTOR_BODY, standard_only(headers), now=time.time())
    with pytest.raises(Rejected, match=reason):
        Verifier([SECRET], legacy=True).verify(VECTOR_BODY, legacy_only(headers), now=time.time())


def test_timestamps_inside_the_window_are_accepted() -> None:
    headers = fresh(ts=int(time.time()) - 240)
    Verifier([SECRET]).verify(VECTOR_BODY, headers, now=time.time())


def test_no_signature_headers_at_all() -> None:
    with pytest.raises(Rejected, match="no signature headers"):
        Verifier([SECRET], legacy=True).verify(VECTOR_BODY, {}, now=time.time())


def test_rotation_accepts_any_configured_secret() -> None:
    both = Verifier([OTHER, SECRET])
    both.verify(VECTOR_BODY, fresh(SECRET), now=time.time())
    both.verify(VECTOR_BODY, fresh(OTHER), now=time.time())
    with pytest.raises(Rejected, match="matches none"):
        Verifier([OTHER]).verify(VECTOR_BODY, fresh(SECRET), now=time.time())


def test_several_signatures_in_one_header_any_may_match() -> None:
    headers = fresh(SECRET)
    wrong = fresh(OTHER)["webhook-signature"]
    headers["webhook-signature"] = f"{wrong} {headers['webhook-signature']}"
    Verifier([SECRET]).verify(VECTOR_BODY, headers, now=time.time())


def test_legacy_is_a_fallback_only_when_enabled() -> None:
    headers = fresh(SECRET)
    headers["webhook-signature"] = fresh(OTHER)["webhook-signature"]  # standard fails, legacy holds
    with pytest.raises(Rejected, match="webhook-signature matches none"):
        Verifier([SECRET]).verify(VECTOR_BODY, headers, now=time.time())
    assert Verifier([SECRET], legacy=True).verify(VECTOR_BODY, headers, now=time.time()).scheme == "legacy"


def test_a_pre_whsec_secret_serves_the_legacy_scheme() -> None:
    old = "an-old-plain-secret"
    ts = int(time.time())
    headers = {
        "x-webhook-timestamp": str(ts),
        "x-webhook-signature": legacy_signature(old.encode(), ts, b"{}"),
    }
    Verifier([old], legacy=True).verify(b"{}", headers, now=time.time())
    with pytest.raises(ConfigError, match="CARDSHARE_WEBHOOK_SECRETS"):
        Verifier([old])


def test_no_reason_ever_names_the_secret() -> None:
    verifier = Verifier([SECRET, OTHER], legacy=True)
    attempts = [
        (VECTOR_BODY, vector_headers()),
        (VECTOR_BODY + b"x", fresh()),
        (VECTOR_BODY, standard_only({**fresh(), "webhook-signature": "garbage"})),
        (VECTOR_BODY, legacy_only({**fresh(), "x-webhook-signature": "00"})),
        (VECTOR_BODY, {}),
    ]
    reasons = []
    for body, headers in attempts:
        with pytest.raises(Rejected) as info:
            verifier.verify(body, headers, now=time.time())
        reasons.append(info.value.reason)
    for secret in (SECRET, OTHER):
        key = secret.removeprefix("whsec_")
        assert not any(key in r or key[:12] in r for r in reasons), reasons
    assert all("\n" not in r for r in reasons)
