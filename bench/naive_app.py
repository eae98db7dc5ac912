"""The end-to-end baseline: how a first version of cardshare would look.

Default Celery settings (prefork pool, early acks, default prefetch), a new database session and
a new SDK client per task, and no claim: check-then-insert, so two copies of a message can both
share. Same broker, same database, same simulator as cardshare's run.
"""

from __future__ import annotations

import datetime as dt
import os

from celery import Celery
from linq import LinqAPIV3
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

app = Celery("naive", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.task_default_queue = "naive"
_engine = create_engine(os.environ.get("DATABASE_URL", "postgresql+psycopg://localhost/x"))


@app.task(name="naive.share")
def share(chat_id: str, day: str) -> None:
    with Session(_engine) as session:
        done = session.execute(
            text("SELECT 1 FROM share_days WHERE chat_id = :c AND day = :d AND status = 'succeeded'"),
            {"c": chat_id, "d": day},
        ).first()
        if done:
            return
    client = LinqAPIV3(api_key=os.environ["LINQ_API_V3_API_KEY"], base_url=os.environ["LINQ_API_V3_BASE_URL"])
    client.chats.share_contact_card(chat_id)
    with Session(_engine) as session:
        session.execute(
            text(
                "INSERT INTO share_days (chat_id, day, status, lease_until, claimed_at, finished_at) "
                "VALUES (:c, :d, 'succeeded', now(), :t, now()) ON CONFLICT DO NOTHING"
            ),
            {"c": chat_id, "d": day, "t": dt.datetime.now(dt.UTC)},
        )
        session.commit()
