"""Property tests from Linq's contract (issue 19, point 6).

Webhook events are drawn from the schemas of Linq's OpenAPI document (copied into
tests/fixtures/linq/openapi-webhooks.json) and posted, signed, to the real receiver: each is
recorded, kept pending or knowingly ignored (200), never answered 4xx or 5xx. Linq answers to a
share (statuses, headers, bodies within and beyond the ErrorResponse schema) are served by the
simulator over loopback: the share path always ends in a recorded state.

Example counts are modest (a few hundred in all) and there is no deadline: the box is shared.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.support import openapi
from tests.support.receiver import SECRET, ReceiverServer
from tests.support.world import World
from worker.config import Secret, Settings
from worker.deps import Deps
from worker.ingest.webhooks import create_app
from worker.rules import bounds
from worker.rules.cadence import share_day
from worker.sharing.share import Outcome, share_chat
from worker.simulator.webhooks import signed_headers

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

ANSWERED = {"recorded", "duplicate", "ignored", "pending"}


@pytest.fixture
def receiver(settings: Settings, deps: Deps) -> Iterator[ReceiverServer]:
    app = create_app(settings.replace(webhook_secrets=(Secret(SECRET),)), deps.sessions)
    with ReceiverServer(app) as server:
        yield server


EVENTS = st.sampled_from(openapi.webhook_names()).flatmap(openapi.events)


@PROPERTY
@given(doc=EVENTS)
def test_every_event_the_schema_allows_is_answered_2xx(receiver: ReceiverServer, doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    answer = httpx.post(
        receiver.url,
        content=raw,
        headers=signed_headers(SECRET, webhook_id, int(time.time()), raw),
        timeout=10,
    )
    assert answer.status_code == 200, (answer.status_code, answer.text, raw[:400])
    assert answer.json()["status"] in ANSWERED


def _header_text() -> st.SearchStrategy[str]:
    # What an HTTP header can carry: printable latin-1 (the simulator cannot send controls).
    return st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


ODD_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
)

BODIES = st.one_of(
    openapi.error_bodies().map(json.dumps),  # within the schema
    st.fixed_dictionaries(  # beyond it: fields of every type and size
        {
            "error": st.fixed_dictionaries(
                {"status": ODD_NUMBERS, "code": ODD_NUMBERS, "message": st.text(max_size=2000) | ODD_NUMBERS},
                optional={"retry_after": ODD_NUMBERS},
            ),
            "trace_id": st.text(max_size=500) | ODD_NUMBERS,
        }
    ).map(lambda d: json.dumps(d, allow_nan=True)),
    st.text(max_size=500),  # not JSON at all
)

ANSWERS = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            [200, 201, 202, 204, 299, 400, 401, 403, 404, 408, 409, 418, 422, 429, 500, 502, 503, 504, 599]
        )
        | st.integers(min_value=200, max_value=599),
        "body_raw": BODIES,
        "headers": st.dictionaries(
            st.sampled_from(["X-Trace-ID", "Retry-After", "Retry-After-Ms", "Content-Type"]),
            _header_text(),
            max_size=4,
        ),
        "content_type": st.sampled_from(["application/json", "text/plain", "text/html; charset=utf-8"]),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=ANSWERS)
def test_whatever_linq_answers_the_share_path_ends_recorded(
    world: World, deps: Deps, answer: dict[str, Any]
) -> None:
    world.line()
    chat = world.chat()
    rule = {"path": "/share_contact_card$", "chat_id": str(chat), "times": 1, **answer}
    world.sim.add_faults([rule])  # type: ignore[list-item]
    day = share_day(deps.clock(), deps.settings.zone)
    result = share_chat(chat, day, deps, task_id="prop")
    with deps.sessions() as s:
        row = (
            s.execute(text("SELECT status, lost_claims FROM share_days WHERE chat_id = :c"), {"c": chat})
            .mappings()
            .first()
        )
        attempts = (
            s.execute(
                text(
                    "SELECT finished_at, error, trace_id, linq_code, retry_after_s FROM attempts "
                    "WHERE chat_id = :c"
                ),
                {"c": chat},
            )
            .mappings()
            .all()
        )
    assert row is not None
    assert row["status"] != "claimed", (answer, result)
    assert row["lost_claims"] == 0
    for a in attempts:
        assert a["finished_at"] is not None
        assert a["error"] is None or len(a["error"]) <= bounds.ERROR_MAX
        assert a["trace_id"] is None or len(a["trace_id"]) <= bounds.TRACE_ID_MAX
        assert a["retry_after_s"] is None or 0 <= a["retry_after_s"] <= bounds.RETRY_AFTER_MAX_S
    if 200 <= answer["status"] < 300:
        assert result.outcome is Outcome.SHARED
        assert row["status"] == "succeeded"
    world.sim.clear_faults()
