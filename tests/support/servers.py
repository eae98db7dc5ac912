"""The test servers: real PostgreSQL and Redis (embedded unless CARDSHARE_TEST_* URLs are set) and
the key the Linq simulator accepts."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from worker.embedded import EmbeddedPostgres, EmbeddedRedis

API_KEY = "test-key-0123456789"


@dataclass
class Servers:
    admin_dsn: str  # psycopg DSN to the maintenance database
    template: str
    sqlalchemy_base: str  # URL with a placeholder database
    redis_url: str
    postgres: EmbeddedPostgres | None = None
    redis_server: EmbeddedRedis | None = None
    made: list[str] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        return str(
            make_url(self.sqlalchemy_base).set(database=database).render_as_string(hide_password=False)
        )
