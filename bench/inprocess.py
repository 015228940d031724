"""In-process measurements: no server, no network, the same process for every side.

Pipeline: ``AuthRefreshModule.authenticate(request)`` on a real Starlette ``Request`` (extract,
verify, store step when there is a store, user lookup) then ``issue(user)`` (two new tokens),
against the raw work: PyJWT's ``jwt.decode`` of the same token, the same user lookup, and the
two ``jwt.encode`` calls of ``bench.apps.raw_pair``.

Application: each configuration's whole ASGI application called directly with a refresh request
(routing, dependencies, response), against the hand-written raw application: the framework and
library overhead without uvicorn or sockets.

Sides are timed interleaved in rounds after a warm-up round; each refresh presents a token never
presented before. The median of the rounds is reported.
"""

from __future__ import annotations

import inspect
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope

from bench import apps
from bench.common import (
    ALGORITHM,
    REFRESH_SECRET,
    REQUIRED_CLAIMS,
    USER_ID,
    BenchUsers,
    apply_environment,
)
from bench.configurations import Configuration, environment

Step = Callable[[int], Awaitable[None]]


@dataclass
class Timing:
    name: str
    microseconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.microseconds)


def http_request(path: str, body: bytes) -> tuple[Scope, Receive]:
    """The ASGI scope and receive channel uvicorn would hand over for a JSON POST."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    message: Message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        return message

    return scope, receive


def refresh_body(token: str) -> bytes:
    return b'{"refreshToken":"' + token.encode() + b'"}'


async def call_app(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Status and body of one request to ``app``."""
    status = 0
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, b"".join(chunks)


@asynccontextmanager
async def started_app(
    configuration: Configuration, workdir: Path, redis_url: str | None
) -> AsyncIterator[FastAPI]:
    """The configuration's benchmark application with its lifespan running."""
    # The library reads its settings from the environment when the lifespan starts.
    apply_environment(environment(configuration, workdir, redis_url))
    builders = {"raw": apps.raw_app, "library": apps.library_app, "authx": apps.authx_app}
    app = builders[configuration.stack]()
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def started_module(
    configuration: Configuration,
    workdir: Path,
    redis_url: str | None,
    extra_environment: dict[str, str] | None = None,
) -> AsyncIterator[tuple[FastAPI, Any]]:
    """A library module (no route) attached to an application whose lifespan is running."""
    apply_environment(
        {**environment(configuration, workdir, redis_url), **(extra_environment or {})}
    )
    from auth_refresh import AuthRefreshModule

    app = FastAPI()
    module = AuthRefreshModule.for_root(user_lookup_service=BenchUsers(), controllers=False)
    module.attach(app)
    async with app.router.lifespan_context(app):
        yield app, module


def module_refresh(module: Any) -> Callable[[Request], Awaitable[Any]]:
    """One refresh through the public module API, as the refresh route makes it.

    With rotation ``issue`` takes the request (the successor pair ``authenticate`` kept there);
    without it, ``issue(user)`` alone.
    """
    if "request" in inspect.signature(module.issue).parameters:

        async def refresh(request: Request) -> Any:
            return await module.issue(await module.authenticate(request), request)

    else:

        async def refresh(request: Request) -> Any:
            return await module.issue(await module.authenticate(request))

    return refresh


def module_request(app: FastAPI, token: str) -> Request:
    scope, receive = http_request("/auth/refresh", refresh_body(token))
    scope["app"] = app
    return Request(scope, receive)


async def rotation_probe(
    configuration: Configuration, workdir: Path, redis_url: str | None
) -> str | None:
    """None when the library really rotates with this store; otherwise why it is skipped.

    With the grace window off, a refresh token presented a second time must be refused.
    Errors propagate: a library that has stores but fails to use one is not skipped silently.
    """
    from auth_refresh import AuthRefreshError

    async with started_module(
        configuration, workdir, redis_url, {"AUTH_REFRESH_GRACE_SECONDS": "0"}
    ) as (app, module):
        user = BenchUsers().by_subject(USER_ID)
        token = (await module.issue(user))["refreshToken"]
        refresh = module_refresh(module)
        await refresh(module_request(app, token))
        try:
            await refresh(module_request(app, token))
        except AuthRefreshError:
            return None
    # AUTH_REFRESH_STORE_URL is accepted, but the module does not consume tokens yet.
    return "rotation is not wired into AuthRefreshModule yet (issue 4)"


async def _timed(step: Step, start: int, count: int) -> float:
    began = time.perf_counter_ns()
    for index in range(start, start + count):
        await step(index)
    return (time.perf_counter_ns() - began) / count / 1000


async def _interleaved(
    steps: list[Step], timings: list[Timing], iterations: int, rounds: int
) -> None:
    for round_number in range(rounds + 1):
        values = [await _timed(step, round_number * iterations, iterations) for step in steps]
        if round_number == 0:
            continue  # warm-up
        for timing, value in zip(timings, values, strict=True):
            timing.microseconds.append(value)


async def measure_pipeline(
    configurations: list[Configuration],
    *,
    iterations: int,
    rounds: int,
    workdir: Path,
    redis_url: str | None,
) -> list[Timing]:
    """Microseconds per refresh: ``raw`` first, then each library configuration."""
    users = BenchUsers()
    user = users.by_subject(USER_ID)
    assert user is not None
    total = iterations * (rounds + 1)
    raw_tokens = [apps.raw_pair(USER_ID)["refreshToken"] for _ in range(total)]

    async def raw_step(index: int) -> None:
        claims = jwt.decode(
            raw_tokens[index],
            REFRESH_SECRET,
            algorithms=[ALGORITHM],
            options={"require": REQUIRED_CLAIMS},
        )
        found = users.by_subject(claims["sub"])
        assert found is not None
        apps.raw_pair(found.id)

    steps: list[Step] = [raw_step]
    timings = [Timing("raw")]
    async with AsyncExitStack() as stack:
        for configuration in configurations:
            app, module = await stack.enter_async_context(
                started_module(configuration, workdir, redis_url)
            )
            tokens = [(await module.issue(user))["refreshToken"] for _ in range(total)]
            steps.append(_module_step(module, app, tokens))
            timings.append(Timing(configuration.name))
        await _interleaved(steps, timings, iterations, rounds)
    return timings


def _module_step(module: Any, app: FastAPI, tokens: list[str]) -> Step:
    # Scopes are built before timing: uvicorn builds them outside the application too.
    requests = []
    for token in tokens:
        scope, receive = http_request("/auth/refresh", refresh_body(token))
        scope["app"] = app
        requests.append((scope, receive))
    refresh = module_refresh(module)

    async def step(index: int) -> None:
        await refresh(Request(*requests[index]))

    return step


async def measure_applications(
    configurations: list[Configuration],
    *,
    iterations: int,
    rounds: int,
    workdir: Path,
    redis_url: str | None,
) -> list[Timing]:
    """Microseconds per ``POST /auth/refresh`` through each whole application (raw included)."""
    total = iterations * (rounds + 1)
    steps: list[Step] = []
    timings: list[Timing] = []
    async with AsyncExitStack() as stack:
        for configuration in configurations:
            app = await stack.enter_async_context(started_app(configuration, workdir, redis_url))
            tokens = await mint(app, total)
            steps.append(_application_step(configuration.name, app, tokens))
            timings.append(Timing(configuration.name))
        await _interleaved(steps, timings, iterations, rounds)
    return timings


async def mint(app: ASGIApp, count: int) -> list[str]:
    """``count`` fresh refresh tokens from the application's own ``/bench/mint``."""
    tokens: list[str] = []
    while len(tokens) < count:
        batch = min(count - len(tokens), 5000)
        status, body = await call_app(
            app, *http_request("/bench/mint", json.dumps({"count": batch}).encode())
        )
        if status != 200:
            raise RuntimeError(f"/bench/mint answered {status}: {body[:200]!r}")
        tokens.extend(json.loads(body)["tokens"])
    return tokens


def _application_step(name: str, app: ASGIApp, tokens: list[str]) -> Step:
    requests = [http_request("/auth/refresh", refresh_body(token)) for token in tokens]

    async def step(index: int) -> None:
        status, body = await call_app(app, *requests[index])
        if status != 200:
            raise RuntimeError(f"{name}: POST /auth/refresh answered {status}: {body[:200]!r}")

    return step
