"""Celery: the app's configuration (`app`), its signal handlers (`signals`), the thin tasks
(`tasks`), bulk publishing and queue depth (`publish`), and the Redis transport
(`redis_transport`, its Lua in `take_more.lua`). `celery -A worker.celery_app` finds the app.
"""
