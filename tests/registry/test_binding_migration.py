"""Migration 0005_binding: an issuer trusted before it serves no agent and takes no token that
names a client until a registrar says which (docs/delegation.md, "Deny by default, and
upgrading"); tools gain their pending-change columns empty."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from sqlmodel import Session

from broker.db import alembic_config, make_engine
from registry.issuers import load_issuer_views
from registry.tool_store import fetch_tool


def test_existing_rows_are_denied_by_default(db_url: str) -> None:
    cfg = alembic_config(db_url)
    for revision in ("0002", "0004"):
        command.upgrade(cfg, revision)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO trusted_issuers (issuer, description, discovery, audiences, "
                "algorithms, created_by, created_at, updated_at) VALUES ('https://i.test', '', "
                "'oidc', '[\"writ\"]', '[\"RS256\"]', 'x', 0, 0)"))
            conn.execute(sa.text(
                "INSERT INTO tools (tool_id, source, document, document_hash, created_by, "
                "created_at, updated_at) VALUES ('https://t.test/x', 'pinned', '{}', 'h', 'x', "
                "0, 0)"))
        command.upgrade(cfg, "heads")
        with Session(engine) as s:
            view = load_issuer_views(s)["https://i.test"]
            assert (view.allowed_clients, view.agent_namespaces) == (frozenset(), ())
            tool = fetch_tool(s, "https://t.test/x")
            assert tool is not None
            assert (tool.pending_document, tool.pending_hash, tool.pending_changes,
                    tool.pending_since) == (None, None, None, None)
    finally:
        engine.dispose()
