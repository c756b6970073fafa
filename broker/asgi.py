"""ASGI entry point for process managers: ``uvicorn --factory broker.asgi:create``.

Settings come from the environment (``WRIT_*``), so every worker builds the same app.
"""

from __future__ import annotations

from fastapi import FastAPI

from broker.app import create_app
from broker.settings import Settings


def create() -> FastAPI:
    return create_app(Settings())
