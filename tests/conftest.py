"""Shared fixtures: a database on SQLite and, when ``WRIT_TEST_POSTGRES_URL`` is set, on the
real PostgreSQL (each test in its own schema); a frozen clock; a dev world; the app."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, SQLModel

import broker.admin.tokens
import broker.audit.writer
import broker.signing.store
import registry.models  # noqa: F401  (tables register on import)
from broker.app import create_app
from broker.cli.dev import DevTrustDomain, seed
from broker.db import make_engine
from broker.settings import Settings

if TYPE_CHECKING:  # tests.world imports this module
    from tests.idp import TestIssuer
    from tests.world import World

PG_URL = os.environ.get("WRIT_TEST_POSTGRES_URL")
ISSUER = "http://writ.test"
T0 = 1_900_000_000.0

_ = (broker.admin.tokens, broker.audit.writer, broker.signing.store)


class FrozenClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def _backends() -> list[object]:
    marks = [] if PG_URL else [pytest.mark.skip(reason="WRIT_TEST_POSTGRES_URL not set")]
    return ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, *marks])]


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL; PostgreSQL URLs select a fresh schema through ``search_path``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'writ.db'}"
        return
    assert PG_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    SQLModel.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def dev_td() -> DevTrustDomain:
    return DevTrustDomain.generate()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=db_url,
        issuer=ISSUER,
        dev=True,
        trust_domain="dev.writ.local",
    )


@pytest.fixture
def seeded(engine: Engine, dev_td: DevTrustDomain, clock: FrozenClock) -> DevTrustDomain:
    with Session(engine) as session:
        seed(session, dev_td, now=clock())
    return dev_td


@pytest.fixture
def client(
    settings: Settings, engine: Engine, seeded: DevTrustDomain, clock: FrozenClock
) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, clock=clock)
    with TestClient(app, base_url=ISSUER) as tc:
        yield tc


@pytest.fixture
def idp() -> TestIssuer:
    """The trusted user-token issuer of the agent world (tests/world.py)."""
    from tests.idp import TestIssuer
    from tests.world import IDP

    return TestIssuer(IDP)


@pytest.fixture
def world(settings: Settings, engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
          idp: TestIssuer) -> Iterator[World]:
    """The agent world of tests/world.py, served by a Writ app on the test database."""
    from tests.world import open_world

    with open_world(settings, engine, seeded, clock, idp) as w:
        yield w
