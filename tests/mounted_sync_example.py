"""The sync example mounted under ``/api`` in another application, which enters its lifespan:
``uvicorn mounted_sync_example:app`` (with ``tests/`` on the path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from examples.sync_registration.app import app as api
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(_: Any) -> AsyncIterator[None]:
    async with api.router.lifespan_context(api):
        yield


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/api", api)
