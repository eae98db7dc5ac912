"""Fault-injection rules: which requests get latency, a canned answer, or a hang after the work."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

FaultMode = Literal["respond", "pass", "accept_then_hang"]
MODES: tuple[FaultMode, ...] = ("respond", "pass", "accept_then_hang")

# The Linq code a canned error carries when the rule names none: what the real API sends for that status.
DEFAULT_CODES: dict[int, int] = {401: 2004, 404: 2001, 429: 1007, 500: 3006}


@dataclass
class FaultRule:
    path: re.Pattern[str]
    mode: FaultMode = "respond"
    method: str | None = None
    chat_id: str | None = None
    status: int = 500
    code: int | None = None
    message: str | None = None
    retry_after: int | None = None
    body_raw: str | None = None
    content_type: str = "text/plain; charset=utf-8"
    latency_ms: int = 0
    hang_s: float = 120.0
    headers: dict[str, str] | None = None  # set on the answer, canned or passed through (odd metadata)
    times: int | None = None
    probability: float = 1.0
    remaining: int | None = None  # counts down from `times`; None = forever
    applied: int = 0

    def matches(self, method: str, path: str, chat_id: str | None) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.chat_id is not None and self.chat_id != chat_id:
            return False
        return self.path.search(path) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path.pattern,
            "mode": self.mode,
            "method": self.method,
            "chat_id": self.chat_id,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "body_raw": self.body_raw,
            "content_type": self.content_type,
            "latency_ms": self.latency_ms,
            "hang_s": self.hang_s,
            "headers": self.headers,
            "times": self.times,
            "remaining": self.remaining,
            "probability": self.probability,
            "applied": self.applied,
        }


def parse_rule(raw: Mapping[str, Any]) -> FaultRule:
    """Build a rule from its admin-API JSON; raises ValueError with a readable reason."""
    try:
        path = re.compile(str(raw["path"]))
    except KeyError as exc:
        raise ValueError("a fault rule needs a 'path' regex") from exc
    except re.error as exc:
        raise ValueError(f"bad path regex: {exc}") from exc
    mode = raw.get("mode", "respond")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    status = int(raw.get("status", 500))
    probability = float(raw.get("probability", 1.0))
    if not 0.0 <= probability <= 1.0:
        raise ValueError("probability must be within 0..1")
    method = raw.get("method")
    times = raw.get("times")
    retry_after = raw.get("retry_after")
    headers = raw.get("headers")
    if headers is not None and not (
        isinstance(headers, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise ValueError("headers must be an object of strings")
    return FaultRule(
        path=path,
        mode=mode,
        method=str(method).upper() if method else None,
        chat_id=str(raw["chat_id"]) if raw.get("chat_id") else None,
        status=status,
        code=raw["code"] if "code" in raw else DEFAULT_CODES.get(status),
        message=raw.get("message"),
        retry_after=int(retry_after) if retry_after is not None else None,
        body_raw=raw.get("body_raw"),
        content_type=str(raw.get("content_type", "text/plain; charset=utf-8")),
        latency_ms=int(raw.get("latency_ms", 0)),
        hang_s=float(raw.get("hang_s", 120.0)),
        headers=dict(headers) if headers else None,
        times=int(times) if times is not None else None,
        probability=probability,
        remaining=int(times) if times is not None else None,
    )


class FaultBook:
    """Ordered rules; the first one that matches (and wins its dice roll) applies to a request."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[FaultRule] = []
        self._rng = random.Random(seed)

    def reset(self, seed: int) -> None:
        self.rules = []
        self._rng = random.Random(seed)

    def add(self, raws: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        # Parse all first so one bad rule adds none.
        parsed = [parse_rule(raw) for raw in raws]
        self.rules.extend(parsed)
        return parsed

    def clear(self) -> None:
        self.rules = []

    def pick(self, method: str, path: str, chat_id: str | None) -> FaultRule | None:
        """Return the rule for this request and spend one of its `times`, or None."""
        for rule in self.rules:
            if not rule.matches(method, path, chat_id):
                continue
            # Roll only for partial rules so adding a certain rule does not shift later rolls.
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            rule.applied += 1
            return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self.rules]
