"""Database engines and migrations. SQLite by default (one file), PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            # durable at commit: the audit record of a returned token must survive a crash
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                         connect_args=PG_SOCKET_LIMITS, **kwargs)


# The audit batch commits on the event loop's thread (broker/audit/writer.py): a database host that
# vanishes must fail the call, not hold the loop. libpq's TCP keepalives find a silent peer
# in about 8 s; tcp_user_timeout ends a send left unacknowledged for 10 s.
PG_SOCKET_LIMITS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 5,
                    "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": 10000}


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Apply every migration (``writ db upgrade``; ``writ serve`` runs it on start)."""
    # "heads": feature branches of the schema each start from the initial revision
    command.upgrade(alembic_config(url), "heads")
