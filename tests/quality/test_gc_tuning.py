"""The serving process's collector setup (broker/asgi.py, docs/operations.md#memory-and-
garbage-collection): what exists once the app is built is frozen out of collections, and the
young generation's threshold follows ``WRIT_GC_YOUNG_THRESHOLD`` (0: neither)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

import broker.asgi
from broker.settings import Settings


@pytest.fixture
def collector() -> Iterator[None]:
    """Leave this test process's collector as it was found."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_built_objects_are_frozen_out_of_collections(collector: None) -> None:
    built = _Cycle()
    broker.asgi.tune_gc(10_000)
    assert gc.get_freeze_count() > 0
    assert not any(o is built for o in gc.get_objects())  # no collection walks it
    later = _Cycle()
    assert any(o is later for o in gc.get_objects())  # what requests make is collected
    assert gc.get_threshold()[0] == 10_000


def test_zero_leaves_the_collector_untouched(collector: None) -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    broker.asgi.tune_gc(0)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_the_asgi_factory_applies_the_setting(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []

    def create_app(settings: Settings) -> FastAPI:
        seen.append(settings)  # the app itself is built and tested elsewhere
        return FastAPI()

    monkeypatch.setattr(broker.asgi, "create_app", create_app)
    monkeypatch.setenv("WRIT_GC_YOUNG_THRESHOLD", "12345")
    app = broker.asgi.create()
    assert isinstance(app, FastAPI)
    assert seen[0].gc_young_threshold == 12345
    assert gc.get_threshold()[0] == 12345
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("value", ["-1", "1000001", "many"])
def test_bad_threshold_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("WRIT_GC_YOUNG_THRESHOLD", value)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert value not in str(err.value)  # hide_input_in_errors
