from __future__ import annotations

import pytest

from worker.rules.classify import Action, CallResult, Transport, classify
from worker.rules.states import AttemptOutcome as O

T = Transport


@pytest.mark.parametrize(
    ("result", "action", "outcome"),
    [
        (CallResult(204), Action.SUCCESS, O.OK),
        (CallResult(200), Action.SUCCESS, O.OK),
        (CallResult(202), Action.SUCCESS, O.OK),
        (CallResult(500, 3006), Action.RETRY, O.RETRYABLE),
        (CallResult(500, 2022), Action.RETRY, O.RETRYABLE),
        (CallResult(500, None), Action.RETRY, O.RETRYABLE),
        (CallResult(502), Action.RETRY, O.RETRYABLE),
        (CallResult(503), Action.RETRY, O.RETRYABLE),
        (CallResult(503, 3006), Action.RETRY, O.RETRYABLE),
        (CallResult(504), Action.RETRY, O.RETRYABLE),
        (CallResult(408), Action.RETRY, O.RETRYABLE),
        (CallResult(503, 4004), Action.DEFER, O.FATAL),
        (CallResult(403, 2027), Action.DEFER, O.FATAL),
        (CallResult(429, 1007), Action.RATE_LIMITED, O.RETRYABLE),
        (CallResult(429, None), Action.RATE_LIMITED, O.RETRYABLE),
        (CallResult(404, 2012), Action.CARD_INACTIVE, O.FATAL),
        (CallResult(404, 2001), Action.CHAT_NOT_FOUND, O.FATAL),
        (CallResult(404, None), Action.CHAT_NOT_FOUND, O.FATAL),
        (CallResult(403, 2024), Action.OPTED_OUT, O.FATAL),
        (CallResult(403, 2026), Action.PERMANENT, O.FATAL),
        (CallResult(401, 2004), Action.AUTH, O.FATAL),
        (CallResult(401, None), Action.AUTH, O.FATAL),
        (CallResult(403, 2005), Action.AUTH, O.FATAL),
        (CallResult(409, 2014), Action.PERMANENT, O.FATAL),
        (CallResult(409, None), Action.PERMANENT, O.FATAL),
        (CallResult(400, 1002), Action.PERMANENT, O.FATAL),
        (CallResult(422, None), Action.PERMANENT, O.FATAL),
        (CallResult(transport=T.NOT_SENT), Action.RETRY, O.RETRYABLE),
        (CallResult(transport=T.MAYBE_SENT), Action.RETRY, O.UNKNOWN),
    ],
)
def test_classify(result: CallResult, action: Action, outcome: O) -> None:
    verdict = classify(result)
    assert (verdict.action, verdict.outcome) == (action, outcome)
    assert verdict.retryable == (action in (Action.RETRY, Action.RATE_LIMITED))


def test_classify_needs_status_or_transport() -> None:
    with pytest.raises(ValueError, match="status"):
        classify(CallResult())
