"""ASGI entry point for process managers: ``uvicorn --factory broker.asgi:create``.

Settings come from the environment (``WRIT_*``), so every worker builds the same app.
"""

from __future__ import annotations

import gc

from fastapi import FastAPI

from broker.app import create_app
from broker.settings import Settings


def create() -> FastAPI:
    settings = Settings()
    app = create_app(settings)
    tune_gc(settings.gc_young_threshold)
    return app


def tune_gc(young_threshold: int) -> None:
    """Set a serving process's cyclic garbage collector up for many short requests.

    Everything built so far (modules, the app) lives as long as the process: ``gc.freeze``
    moves it out of the collector's reach, so a full collection no longer walks it. A higher
    young-generation threshold lets a request's objects, freed by reference counting,
    go before a collection would promote those of requests still awaiting their audit
    commit. ``0`` leaves the collector as Python set it up.
    docs/operations.md#memory-and-garbage-collection.
    """
    if not young_threshold:
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
