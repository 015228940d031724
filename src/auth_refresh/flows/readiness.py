"""Whether a registration can serve: its store answers, and holds this release's schema.

The probe is one read a store makes anyway (``session_active`` of an id no session has): it
connects, and checks or migrates the schema as every first step does. It answers within
``READINESS_TIMEOUT`` seconds even while the store hangs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import resolve
from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.transport.responses import NO_STORE

__all__ = [
    "READINESS_TIMEOUT",
    "Readiness",
    "probe_store",
    "readiness_response",
    "registration_readiness",
]

log = logging.getLogger("auth_refresh")

READINESS_TIMEOUT = 2.0
# No session has it: session ids are 43 base64url characters.
PROBE_SESSION_ID = "readiness-probe"


@dataclass(frozen=True)
class Readiness:
    """The answer of a readiness check: ``reason`` says why not, for operators."""

    ready: bool
    reason: str | None = None
    # The store will not do for this release: starting would only fail every request.
    fatal: bool = False


async def probe_store(store: RefreshTokenStore) -> Readiness:
    """Ask ``store`` one cheap question, and say whether it answered in time."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            await store.session_active(PROBE_SESSION_ID, now=time.time())
    except TimeoutError:
        return Readiness(False, f"the store did not answer within {READINESS_TIMEOUT:g} s")
    except StoreUnavailableError as error:
        return Readiness(False, f"the store cannot answer: {error.message}")
    except ConfigurationError as error:
        return Readiness(False, error.message, fatal=True)
    except Exception as error:  # a store's own failure is a "not ready", never a 500
        log.warning("readiness: the store failed: %s: %s", type(error).__name__, error)
        return Readiness(False, f"the store failed: {type(error).__name__}")
    return Readiness(True)


def readiness_response(readiness: Readiness) -> Response:
    """200 ``{"status": "ready"}``, or 503 with ``Retry-After`` and the reason."""
    if readiness.ready:
        return JSONResponse({"status": "ready"}, headers=NO_STORE)
    body: dict[str, Any] = {"status": "unavailable", "reason": readiness.reason}
    return JSONResponse(body, status_code=503, headers={**NO_STORE, "Retry-After": "1"})


async def registration_readiness(
    container: Any,
    started: bool,
    start: Callable[[Any], Awaitable[None]],
    request: Request | None = None,
) -> Readiness:
    """``RefreshFlow.readiness``: of the store of ``container`` when the registration keeps
    anything in it (rotation, DPoP proofs); ``start`` starts it for a request that comes first."""
    try:
        if not started and request is not None:
            await start(request.app)
        settings = container.settings()
        if not settings.rotation and settings.dpop == "off":
            return Readiness(True)
        store = await resolve(container.store())
    except ConfigurationError as error:
        return Readiness(False, error.message, fatal=True)
    return await probe_store(store)
