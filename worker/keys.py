"""The names every cardshare process agrees on: queues, task names, Redis keys, lock keys.

A worker, beat, the CLI and the healthcheck each read them from here, so renaming one is one
edit. Task and queue names are part of the wire format: a message already in Redis names its
task, so changing one orphans it.
"""

from __future__ import annotations

# Celery queues: shares on one, the sweep/recover/sync passes on another so a long share backlog
# never delays a sweep.
SHARE_QUEUE = "cardshare"
CONTROL_QUEUE = "cardshare.control"

# Celery task names (stable, explicit: moving the code orphans no queued message).
SHARE_TASK = "cardshare.share_chat"
SWEEP_TASK = "cardshare.sweep"
RECOVER_TASK = "cardshare.recover"
SYNC_TASK = "cardshare.sync"
# Day partitions ahead, retention behind (hourly).
MAINTAIN_TASK = "cardshare.maintain"
RELEASE_TASK = "cardshare.release"
REFRESH_CARD_TASK = "cardshare.refresh_card"
# Today's chat-day counts saved for `status` and the page (docs/retention.md §7).
COUNT_TASK = "cardshare.count"

# kombu's Redis transport keeps delivered-but-unacknowledged messages in this hash (its default).
UNACKED_KEY = "unacked"

# Heartbeats in Redis: one record per worker node, one for beat.
WORKER_PREFIX = "cardshare:worker:"
BEAT_KEY = "cardshare:beat"

# Pace (docs/decisions.md §11): each line's log of granted calls and its schedule horizon, and
# the account's log.
PACE_LOG_PREFIX = "cardshare:pace:log:"
PACE_HORIZON_PREFIX = "cardshare:pace:next:"
PACE_ACCOUNT_KEY = "cardshare:pace:account"

# PostgreSQL advisory lock keys: one pass of each kind at a time, whoever starts it.
SWEEP_LOCK = 0x6361_7264_0001  # "card" + 1
RECOVER_LOCK = 0x6361_7264_0002
SYNC_LOCK = 0x6361_7264_0003
MAINTAIN_LOCK = 0x6361_7264_0004
# Held (per transaction) while a day's partitions are created: the sweep, `db upgrade` and the
# maintenance pass may all find the same day missing.
PARTITIONS_LOCK = 0x6361_7264_0005
RELEASE_LOCK = 0x6361_7264_0006
