"""In-process measurements: no server, no network, the same process for every side.

Pipeline: ``AuthRefreshModule.refresh(request)`` on a real Starlette ``Request``, the refresh
route's walk without its answer (extract, verify, store step when there is a store, user lookup,
two new tokens),
against the raw work: PyJWT's ``jwt.decode`` of the same token, the same user lookup, and the
two ``jwt.encode`` calls of ``bench.apps.raw_pair``.

Sides are timed interleaved in rounds after a warm-up round; each refresh presents a token never
presented before. Each side's median over the rounds is reported, and its ratio to raw as the
median of its round-by-round ratios, as the HTTP table does. What the sides are given (tokens, the
families minted for them, the requests) is made first and the heap then frozen, as the servers
freeze theirs after each mint.

Beside the memory store: the same store with its OpenTelemetry hooks off. A configuration with
``dpop`` required (``library-memory-dpop``) refreshes pairs bound to a client key, each with a
DPoP proof of it (ES256, made before timing): what a proof costs a refresh.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import (
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
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
    BenchUsers,
    apply_environment,
)
from bench.configurations import Configuration, environment
from bench.dpop_proofs import ProofMaker

Step = Callable[[int], Awaitable[None]]


@dataclass
class Timing:
    name: str
    microseconds: list[float] = field(default_factory=list)
    # Around each timed batch of this side (the same for every side but one).
    batch: Callable[[], AbstractContextManager[None]] = nullcontext

    @property
    def median(self) -> float:
        return statistics.median(self.microseconds)

    def ratios(self, other: Timing) -> list[float]:
        """This side's rounds over ``other``'s, round by round (the two ran next to each
        other, so what the machine did in a round weighs on both)."""
        return [
            mine / theirs
            for mine, theirs in zip(self.microseconds, other.microseconds, strict=True)
        ]


def http_request(
    path: str, body: bytes, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Scope, Receive]:
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
            *extra_headers,
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
async def started_module(
    configuration: Configuration, workdir: Path, redis_url: str | None
) -> AsyncIterator[tuple[FastAPI, Any]]:
    """A library module (no route) attached to an application whose lifespan is running."""
    apply_environment(environment(configuration, workdir, redis_url))
    from auth_refresh import AuthRefreshModule

    app = FastAPI()
    module = AuthRefreshModule.for_root(user_lookup_service=BenchUsers(), controllers=False)
    module.attach(app)
    async with app.router.lifespan_context(app):
        yield app, module


def module_refresh(module: Any) -> Callable[[Request], Awaitable[Any]]:
    """One refresh through the public module API, as the refresh route makes it (in its
    telemetry span): ``refresh(request)``, the walk that returns the pair to answer with."""
    from auth_refresh.telemetry import operation_span

    async def refresh(request: Request) -> Any:
        with operation_span("refresh"):
            return (await module.refresh(request)).pair

    return refresh


def module_request(app: FastAPI, token: str) -> Request:
    scope, receive = http_request("/auth/refresh", refresh_body(token))
    scope["app"] = app
    return Request(scope, receive)


async def _timed(step: Step, start: int, count: int) -> float:
    began = time.perf_counter_ns()
    for index in range(start, start + count):
        await step(index)
    return (time.perf_counter_ns() - began) / count / 1000


async def _interleaved(
    steps: list[Step], timings: list[Timing], iterations: int, rounds: int
) -> None:
    for round_number in range(rounds + 1):
        # Every other round in reverse order: no side always follows the same one (a garbage
        # collection that one side's garbage sets off is paid by the next).
        order = list(range(len(steps)))
        if round_number % 2:
            order.reverse()
        values: dict[int, float] = {}
        for index in order:
            with timings[index].batch():
                values[index] = await _timed(steps[index], round_number * iterations, iterations)
        if round_number == 0:
            continue  # warm-up
        for index, timing in enumerate(timings):
            timing.microseconds.append(values[index])


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
    in_turn = users.in_turn()
    total = iterations * (rounds + 1)
    raw_tokens = [apps.raw_pair(next(in_turn).id)["refreshToken"] for _ in range(total)]

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
            timings.append(Timing(configuration.name))
            if configuration.dpop:
                steps.append(await _dpop_step(module, app, in_turn, total))
                continue
            tokens = [(await module.issue(next(in_turn)))["refreshToken"] for _ in range(total)]
            steps.append(_module_step(module, app, tokens))
            if configuration.store == "memory":
                # The OpenTelemetry hooks' own cost: the API with no SDK, against no hooks.
                tokens = [(await module.issue(next(in_turn)))["refreshToken"] for _ in range(total)]
                steps.append(_module_step(module, app, tokens))
                timings.append(Timing(TELEMETRY_OFF, batch=_telemetry_off))
        # The tokens, families and requests made above are setup, as a server's minted ones:
        # frozen, a full collection in one side's round does not walk them all.
        apps.freeze_heap()
        await _interleaved(steps, timings, iterations, rounds)
    return timings


TELEMETRY_OFF = "library-memory-telemetry-off"
# The URL of the scopes http_request makes, as a proof's htu names it.
ORIGIN = "http://127.0.0.1"


@contextmanager
def _telemetry_off() -> Iterator[None]:
    # For a whole timed batch: instrument() builds the instruments again, which no side pays.
    from auth_refresh import telemetry

    telemetry.uninstrument()
    try:
        yield
    finally:
        telemetry.instrument()


async def _dpop_step(module: Any, app: FastAPI, in_turn: Iterator[Any], total: int) -> Step:
    # A client's key: pairs bound to it by a login with a proof, each refreshed with a proof.
    client = ProofMaker()
    tokens = []
    for _ in range(total):
        proof = client.proof("POST", ORIGIN + "/auth/login")
        scope, receive = http_request("/auth/login", b"{}", [(b"dpop", proof)])
        scope["app"] = app
        pair = await module.issue(next(in_turn), Request(scope, receive))
        assert pair.get("tokenType") == "DPoP", pair
        tokens.append(pair["refreshToken"])
    proofs = [client.proof("POST", ORIGIN + "/auth/refresh") for _ in range(total)]
    return _module_step(module, app, tokens, proofs)


def _module_step(
    module: Any, app: FastAPI, tokens: list[str], proofs: list[bytes] | None = None
) -> Step:
    # Scopes are built before timing: uvicorn builds them outside the application too.
    requests = []
    for index, token in enumerate(tokens):
        headers = [] if proofs is None else [(b"dpop", proofs[index])]
        scope, receive = http_request("/auth/refresh", refresh_body(token), headers)
        scope["app"] = app
        requests.append((scope, receive))
    refresh = module_refresh(module)

    async def step(index: int) -> None:
        await refresh(Request(*requests[index]))

    return step
