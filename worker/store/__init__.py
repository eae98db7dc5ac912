"""All SQL, one module per table group. Driver errors become StoreUnavailable at this edge.

The database is the arbiter of "once a day": every writer goes through the (chat_id, day)
primary key of share_days, and every state change after a claim is fenced by its token.
Leases use the database clock (now()) so workers on several machines agree on expiry.

Each statement is a module-level `Sql` constant (`sql`: SQLAlchemy runs it as a `text()`,
psycopg alone as the text SQLAlchemy would send) beside the function that binds it and the
dataclass of its row. The due rule and the status lists are written once, in `due`, and
composed into every statement that needs them.

- `engine`, `session`, `hot`: engines, transactions, and the share path's raw driver access
- `plain`: read-only transactions on a psycopg connection of their own (`status`, `history`)
- `sql`: the statement type; `schema`: the revision the database is at
- `models`: the tables (Alembic's metadata); `due`: the due predicate and the status lists
- `shares`: load a chat, claim its day, attempts, finish; `chats`: chats and lines
- `sweeps`: due pages, recovery, sweep runs, the advisory locks; `cards`: the card cache and writes
- `ingest`: webhook events, sync cursors, message lookups; `audit`: operator actions
- `reports`: read-only queries for status, history, check and the demo
"""
