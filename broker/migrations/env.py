"""Alembic environment: every table of jwks, registry and broker on one metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

import broker.admin.tokens
import broker.audit.writer
import broker.auth.resource_servers
import broker.revocation.store
import broker.signing.store
import registry.issuers
import registry.models
import registry.tool_store

_ = (broker.auth.resource_servers, broker.revocation.store)
_core = (broker.admin.tokens, broker.audit.writer, broker.signing.store, registry.models)
_issuers = registry.issuers
_tools = registry.tool_store

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    if url.startswith("postgresql://"):
        config.set_main_option("sqlalchemy.url", "postgresql+psycopg://" + url[len("postgresql://"):])
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
