"""Operations: day status and chat history (`status`), heartbeats in Redis and the probes reading
them (`health`), the local heartbeat files liveness reads (`liveness`), the `cardshare health`
command (`healthcheck`), Prometheus metrics (`metrics`), the status page (`status_page`) and the
invariant checker (`check`).

Kept light: `cardshare health` imports `healthcheck` and `health` from here in every container
every 30 s, so this package's `__init__` imports nothing.
"""
