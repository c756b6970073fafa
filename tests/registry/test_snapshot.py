"""Registry changes reach another replica's in-memory snapshot: on PostgreSQL through
LISTEN/NOTIFY within a second (the poll is set far slower, so only the notification can
explain it); on SQLite through the version poll."""

from __future__ import annotations

import time

from sqlalchemy import Engine
from sqlmodel import Session

from broker.cli.dev import DEV_AGENT, DevTrustDomain
from broker.db import make_engine
from registry import store
from registry.models import Status
from registry.snapshot import SnapshotHolder
from tests.conftest import FrozenClock


def wait_for(predicate: object, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError("change did not arrive in time")


def test_change_reaches_other_replica(engine: Engine, db_url: str, seeded: DevTrustDomain,
                                      clock: FrozenClock) -> None:
    pg = engine.dialect.name == "postgresql"
    other_engine = make_engine(db_url)  # a second replica: its own pool
    other = SnapshotHolder(other_engine, poll_interval_s=60.0 if pg else 0.2)
    other.refresh(force=True)
    other.start()
    try:
        if pg:
            wait_for(other._listening.is_set, 5.0)
        assert other.current.agents[DEV_AGENT].status is Status.active
        with Session(engine) as s:
            store.set_agent_status(s, DEV_AGENT, Status.suspended, now=clock())
            s.commit()
        elapsed = wait_for(
            lambda: DEV_AGENT in other.current.agents
            and other.current.agents[DEV_AGENT].status is Status.suspended, 5.0)
        assert elapsed < 1.0
    finally:
        other.stop()
        other_engine.dispose()


def test_refresh_returns_only_once_the_change_is_applied(
    engine: Engine, seeded: DevTrustDomain, clock: FrozenClock
) -> None:
    """A refresh that finds the new version already taken by another thread (the poller,
    woken by a notification) returns only after that thread's change hooks have run, so a
    caller that refreshed after a write never serves the old bundles."""
    import threading

    entered, release = threading.Event(), threading.Event()
    applied: list[int] = []

    def hook(snap: object) -> None:
        if threading.current_thread().name == "poller":
            entered.set()
            release.wait(5.0)
        applied.append(snap.version)  # type: ignore[attr-defined]

    holder = SnapshotHolder(engine, on_change=hook)
    holder.refresh(force=True)
    with Session(engine) as s:
        store.set_agent_status(s, DEV_AGENT, Status.suspended, now=clock())
        s.commit()
    poller = threading.Thread(target=holder.refresh, name="poller")
    poller.start()
    try:
        assert entered.wait(5.0)
        caller = threading.Thread(target=holder.refresh, name="caller")
        caller.start()
        caller.join(0.3)
        assert caller.is_alive()  # waits for the poller's hooks
        release.set()
        caller.join(5.0)
        assert not caller.is_alive()
        assert applied[-1] == holder.current.version
    finally:
        release.set()
        poller.join(5.0)
