"""The Alembic migrations build exactly the schema the models declare, on SQLite and on
PostgreSQL, and ``writ serve`` can run them on an existing database again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import tests.conftest  # noqa: F401  (every table registered)
from broker.db import make_engine, upgrade


def test_migrations_match_models(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()
