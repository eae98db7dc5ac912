"""Per-line pace across every worker and host: a sliding log of granted calls per line (and one
for the account) in Redis, checked and written by one Lua script at call time, and each line's
schedule horizon, from which the passes hand out slots (docs/decisions.md §11).

The call-time check is the authority: a call is made only after `acquire` granted it, so the
cap holds whatever the schedule says. Time is Redis's (TIME inside the scripts), so hosts need
not agree on the clock; only durations leave Redis. A Redis that cannot be reached refuses
(`PaceUnavailable`): cardshare never calls Linq unpaced.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker.deps import Grant, Reservation
from worker.errors import CardshareError
from worker.keys import PACE_ACCOUNT_KEY, PACE_HORIZON_PREFIX, PACE_LOG_PREFIX
from worker.rules.gate import PACE_LOG_S


class PaceUnavailable(CardshareError):
    """Redis could not be asked for a pace slot: the share waits instead of going out unpaced."""


# KEYS: 1 the line's log, 2 the line's horizon, 3 the account's log (optional).
# ARGV: 1 line cap (0: none), 2 account cap (0: none), 3 log span s, 4 the line's slot spacing s,
#       5 this grant's member (unique).
# Returns {1, now, 0} when granted (and logged), or {0, now, slot}: the next slot of the line's
# schedule that the logs leave room for, taken for the caller.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local span = tonumber(ARGV[3])
local function wait_for(key, cap)
  if cap <= 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
  if redis.call('ZCARD', key) < cap then return 0 end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + span - now
end
local line_cap = tonumber(ARGV[1])
local account_cap = tonumber(ARGV[2])
local wait = wait_for(KEYS[1], line_cap)
if #KEYS >= 3 then
  local w = wait_for(KEYS[3], account_cap)
  if w > wait then wait = w end
end
local ttl = math.ceil(span * 1000) + 1000
if wait <= 0 then
  if line_cap > 0 then
    redis.call('ZADD', KEYS[1], now, ARGV[5])
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  if #KEYS >= 3 and account_cap > 0 then
    redis.call('ZADD', KEYS[3], now, ARGV[5])
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
  return {1, tostring(now), '0'}
end
local spacing = tonumber(ARGV[4])
local horizon = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(horizon, now + wait)
local after = slot + spacing
redis.call('SET', KEYS[2], tostring(after), 'PX', math.ceil((after - now) * 1000) + 60000)
return {0, tostring(now), tostring(slot)}
"""

# KEYS: the horizons of the lines asked for. ARGV: per key, n slots and their spacing.
# Returns {now, start_1, start_2, ...}: each line's first slot; the horizon moves past the last.
RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {tostring(now)}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[2 * i - 1])
  local spacing = tonumber(ARGV[2 * i])
  local start = math.max(tonumber(redis.call('GET', key) or '0'), now)
  if n > 0 and spacing > 0 then
    local after = start + n * spacing
    redis.call('SET', key, tostring(after), 'PX', math.ceil((after - now) * 1000) + 60000)
  end
  out[i + 1] = tostring(start)
end
return out
"""

# KEYS: pairs (log, horizon) per line. ARGV: 1 log span. Returns {now, count_1, horizon_1, ...}.
WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {tostring(now)}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[i], now - tonumber(ARGV[1]), '+inf')
  out[#out + 1] = redis.call('GET', KEYS[i + 1]) or '0'
end
return out
"""


@dataclass(frozen=True)
class Window:
    """A line's pace now: calls granted in the log's span, and how far its schedule reaches."""

    granted: int
    scheduled_s: float  # seconds until the line's next free slot (0: free now)


def log_key(line: str) -> str:
    return PACE_LOG_PREFIX + line


def horizon_key(line: str) -> str:
    return PACE_HORIZON_PREFIX + line


class RedisPacer:
    """The pace state in Redis: one Lua call per share (`acquire`), one per pass page (`reserve`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire: Any = client.register_script(ACQUIRE_LUA)
        self._reserve: Any = client.register_script(RESERVE_LUA)
        self._window: Any = client.register_script(WINDOW_LUA)

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 64) -> RedisPacer:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=5, socket_timeout=5, socket_connect_timeout=5
        )
        return cls(redis.Redis(connection_pool=pool))

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()

    def acquire(self, line: str, *, cap: int | None, account_cap: int | None, spacing_s: float) -> Grant:
        """May `line` call Linq now? Granted calls are logged; a refused one gets the line's next
        slot that leaves room, and its wait."""
        keys = [log_key(line), horizon_key(line)]
        if account_cap:
            keys.append(PACE_ACCOUNT_KEY)
        args = [cap or 0, account_cap or 0, PACE_LOG_S, spacing_s, uuid.uuid4().hex]
        try:
            ok, now, slot = self._acquire(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise PaceUnavailable(f"pace check failed: Redis unavailable ({type(exc).__name__})") from exc
        if int(ok) == 1:
            return Grant(True)
        return Grant(False, max(0.0, float(slot) - float(now)))

    def reserve(self, wants: Sequence[tuple[str, int, float]]) -> Reservation:
        """Slots for several lines at once: (line, how many, spacing) each."""
        if not wants:
            return Reservation({})
        keys = [horizon_key(line) for line, _, _ in wants]
        args: list[float | int] = []
        for _, n, spacing in wants:
            args.extend((n, spacing))
        try:
            out = self._reserve(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise PaceUnavailable(f"pace schedule failed: Redis unavailable ({type(exc).__name__})") from exc
        now = float(out[0])
        return Reservation({w[0]: max(0.0, float(s) - now) for w, s in zip(wants, out[1:], strict=True)})

    def reset(self, line: str) -> None:
        """Forget the line's schedule (its pace changed: the release pass spreads it again)."""
        try:
            self.client.delete(horizon_key(line))
        except (redis.RedisError, OSError) as exc:
            raise PaceUnavailable(f"pace reset failed: Redis unavailable ({type(exc).__name__})") from exc

    def windows(self, lines: Sequence[str]) -> dict[str, Window]:
        """Each line's grants in the log's span and how far its schedule reaches (read only)."""
        if not lines:
            return {}
        keys = [k for line in lines for k in (log_key(line), horizon_key(line))]
        out = self._window(keys=keys, args=[PACE_LOG_S])
        now = float(out[0])
        result = {}
        for i, line in enumerate(lines):
            count, horizon = out[1 + 2 * i], out[2 + 2 * i]
            result[line] = Window(int(count), max(0.0, float(horizon) - now))
        return result
