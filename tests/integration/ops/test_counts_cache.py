"""The status page's counts cache: a day counted once per max age whatever the loads, older
counts answered at once while one refresh reads the new ones, and everything else still read
at every load (worker/ops/counts_cache.py)."""

from __future__ import annotations

import datetime as dt

from tests.support.world import World
from worker.deps import Deps
from worker.ops import controls
from worker.ops import status as status_mod
from worker.ops.counts_cache import CountsCache
from worker.ops.status import Status
from worker.sharing.share import Outcome, share_chat


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_counts_are_read_once_per_max_age_and_refreshed_in_the_background(
    world: World, deps: Deps, today: dt.date
) -> None:
    world.line()
    first, second = world.chat(), world.chat()
    assert share_chat(first, today, deps).outcome is Outcome.SHARED
    clock = Clock()
    cache = CountsCache(deps.sessions, max_age_s=15.0, clock=clock)

    def load() -> Status:
        return status_mod.collect(
            deps.sessions,
            day=None,
            now=dt.datetime.now(dt.UTC),
            policy=deps.policy,
            redis_url=None,
            stall_s=60.0,
            counts_reader=cache,
        )

    st = load()  # the day's first load counts before answering
    assert (st.total.shared, st.total.not_enqueued, st.counted_at) == (1, 1, None)
    counted = st.at
    assert share_chat(second, today, deps).outcome is Outcome.SHARED
    clock.t += 14.0
    st = load()  # younger than the max age: the same counts, and said to be older
    assert (st.total.shared, st.total.not_enqueued, st.counted_at) == (1, 1, counted)
    assert st.as_dict()["counted_at"] == counted.isoformat()
    # A live read (cardshare status) sees the second share at once.
    live = status_mod.collect(
        deps.sessions, day=None, now=dt.datetime.now(dt.UTC), policy=deps.policy, redis_url=None, stall_s=60.0
    )
    assert (live.total.shared, live.counted_at) == (2, None)
    assert "counted_at" not in live.as_dict()
    clock.t += 2.0
    st = load()  # older than the max age: answered with the old counts, one refresh started
    assert st.total.shared == 1
    cache.wait(30)
    st = load()
    assert (st.total.shared, st.total.not_enqueued) == (2, 0)
    assert st.counted_at is not None
    assert st.counted_at > counted
    # The rest of the page is read at every load: an account paused now shows at once.
    assert st.account_paused is None
    controls.pause(deps, None, reason="incident", until=None, by="ops@test")
    st = load()
    assert st.account_paused is not None
    assert st.account_paused.startswith("incident")
    assert st.total.shared == 2
