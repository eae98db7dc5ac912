"""Sharing cards: one chat-day end to end (`share`), the sweep and recovery passes (`sweep`), and
the sandbox process that isolates chat-days that already crashed a worker (`sandbox`).

No Celery here: `worker.queue.tasks` calls into this package; tests call it directly.
"""
