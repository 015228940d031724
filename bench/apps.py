"""The applications served in the HTTP benchmark, one per configuration.

Each has the measured ``POST /auth/refresh`` (body ``{"refreshToken": "..."}``, answer
``{"accessToken", "refreshToken"}`` with no-store headers) and two routes for the harness:
``GET /bench/ready``, ``POST /bench/mint`` (``{"count": n}`` -> ``{"tokens": [...]}``), which
issues fresh refresh tokens with the configuration's own issuing code, in the server process,
so in-memory stores know them (a library configuration with a store also takes ``"jkt"``, a
DPoP key's thumbprint: its tokens are bound to that key, as a login with a proof of it binds
them; the others answer 400), and ``POST /bench/lag`` then ``GET /bench/lag``: the event
loop's lag in between, from a ticker that sleeps 1 ms at a time (how long another request on
the worker waits), stopped by the GET.

A library configuration with a store also has the access-guarded ``GET /bench/me``
(``AuthJwtGuard``) and ``GET /bench/access`` -> ``{"withSession", "withoutSession"}``: an
access token of a new session (``sid``: the guard checks the session) and one without (the
same route without the check), for ``bench.sessions``.

A by-hand anchor (``raw-sqlite``, ``raw-redis``, ...) is the raw endpoint consuming each
refresh token once in its store (``bench.by_hand``, on ``AUTH_REFRESH_STORE_URL``), and minting
into it.

``uvicorn bench.apps:create_app --factory`` with ``BENCH_CONFIGURATION`` set to a name from
``bench.configurations``.
"""

# No "from __future__ import annotations": FastAPI must see the local Depends of authx.
import asyncio
import gc
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bench import by_hand
from bench.common import (
    ACCESS_LIFETIME_SECONDS,
    ACCESS_SECRET,
    ALGORITHM,
    JTI_BYTES,
    NO_STORE,
    REFRESH_LIFETIME_SECONDS,
    REFRESH_SECRET,
    REQUIRED_CLAIMS,
    UNFROZEN_HEAP,
    USER_ID,
    BenchUser,
    BenchUsers,
)
from bench.configurations import BY_NAME

MAX_MINT = 100_000
LAG_TICK_SECONDS = 0.001
MINT_CONCURRENCY = 32
Minter = Callable[[BenchUser], Awaitable[str]]
# A refresh token for the user bound to the DPoP key whose thumbprint (``jkt``) is given.
BoundMinter = Callable[[BenchUser, str], Awaitable[str]]


def create_app() -> FastAPI:
    """The application of the configuration named by ``BENCH_CONFIGURATION``."""
    configuration = BY_NAME[os.environ["BENCH_CONFIGURATION"]]
    builders = {"raw": raw_app, "library": library_app, "authx": authx_app}
    if configuration.stack == "raw" and configuration.store is not None:
        app = raw_app(by_hand.tokens(configuration.store, os.environ["AUTH_REFRESH_STORE_URL"]))
    else:
        app = builders[configuration.stack]()
    # Included last, so it starts after the library's modules (their stores' imports too).
    app.include_router(APIRouter(lifespan=frozen_heap))
    return app


@asynccontextmanager
async def frozen_heap(app: FastAPI) -> AsyncIterator[None]:
    """Every configuration as docs/how-to/deploy.md deploys it: the startup heap frozen."""
    freeze_heap()
    yield


def freeze_heap() -> None:
    """Move what is alive into the collector's permanent generation (unless the A/B says not):
    at startup, and after each mint, whose families are the harness's setup, not the load's."""
    if os.environ.get(UNFROZEN_HEAP) != "1":
        gc.collect()
        gc.freeze()


def _unauthorized() -> Response:
    return JSONResponse({"detail": "Unauthorized"}, status_code=401, headers=NO_STORE)


def raw_app(tokens: by_hand.Tokens | None = None) -> FastAPI:
    """The limit of the stack: one hand-written endpoint doing the same PyJWT work; with
    ``tokens``, a by-hand anchor: that endpoint with each refresh token single-use."""
    users = BenchUsers()

    @asynccontextmanager
    async def opened(app: FastAPI) -> AsyncIterator[None]:
        if tokens is None:
            yield
            return
        await tokens.open()
        try:
            yield
        finally:
            await tokens.close()

    app = FastAPI(lifespan=opened)

    @app.post("/auth/refresh")
    async def refresh(request: Request) -> Response:
        try:
            token = json.loads(await request.body())["refreshToken"]
            claims = jwt.decode(
                token, REFRESH_SECRET, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
            )
        except (ValueError, KeyError, TypeError, jwt.PyJWTError):
            return _unauthorized()
        user = users.by_subject(claims["sub"])
        if user is None:
            return _unauthorized()
        if tokens is None:
            return JSONResponse(raw_pair(user.id), headers=NO_STORE)
        successor = secrets.token_urlsafe(JTI_BYTES)
        if not await tokens.rotate(claims["jti"], successor):
            return _unauthorized()
        return JSONResponse(raw_pair(user.id, successor), headers=NO_STORE)

    async def mint(user: BenchUser) -> str:
        if tokens is None:
            return raw_pair(user.id)["refreshToken"]
        jti = secrets.token_urlsafe(JTI_BYTES)
        await tokens.add(jti, user.id)
        return raw_pair(user.id, jti)["refreshToken"]

    _add_harness_routes(app, users, mint)
    return app


def raw_pair(subject: str, refresh_jti: str | None = None) -> dict[str, str]:
    """The two tokens as a careful hand-written endpoint makes them: typed, with a jti."""
    now = int(time.time())
    access = jwt.encode(
        {
            "sub": subject,
            "iat": now,
            "exp": now + ACCESS_LIFETIME_SECONDS,
            "jti": secrets.token_urlsafe(JTI_BYTES),
        },
        ACCESS_SECRET,
        algorithm=ALGORITHM,
        headers={"typ": "at+jwt"},
    )
    refresh = jwt.encode(
        {
            "sub": subject,
            "iat": now,
            "exp": now + REFRESH_LIFETIME_SECONDS,
            "jti": refresh_jti or secrets.token_urlsafe(JTI_BYTES),
        },
        REFRESH_SECRET,
        algorithm=ALGORITHM,
        headers={"typ": "rt+jwt"},
    )
    return {"accessToken": access, "refreshToken": refresh}


def library_app() -> FastAPI:
    """This library as an application uses it: ``AuthRefreshModule.for_root`` and its route.

    Settings (and the store, when there is one) come from the JWT_MODULE_* and AUTH_REFRESH_*
    variables the harness sets.
    """
    from auth_refresh import AuthJwtGuard, AuthJwtModule, AuthRefreshModule

    app = FastAPI()
    users = BenchUsers()
    module = AuthRefreshModule.for_root(user_lookup_service=users)
    module.attach(app)

    async def mint(user: BenchUser) -> str:
        return (await module.issue(user))["refreshToken"]

    async def mint_bound(user: BenchUser, jkt: str) -> str:
        # What a login with a proof of the key gives: the harness holds the key and names its
        # thumbprint, rather than making a login proof for every token.
        issued = await module.container.rotation().start_family_issued(user.id, jkt=jkt)
        token: str = issued.pair["refreshToken"]
        return token

    rotation = os.environ.get("AUTH_REFRESH_ROTATION") == "true"
    _add_harness_routes(app, users, mint, mint_bound if rotation else None)
    if rotation:
        AuthJwtModule.for_root(user_lookup_service=users).attach(app)

        @app.get("/bench/me")
        async def me(user: Annotated[BenchUser, Depends(AuthJwtGuard())]) -> Response:
            return JSONResponse({"id": user.id}, headers=NO_STORE)

        @app.get("/bench/access", include_in_schema=False)
        async def access() -> dict[str, str]:
            with_session = (await module.issue_for_subject(USER_ID))["accessToken"]
            without: str = module.container.issuer().access_token({"sub": USER_ID})
            return {"withSession": with_session, "withoutSession": without}

    return app


def authx_app() -> FastAPI:
    """The same flow with authx: its refresh dependency, the user lookup, two new tokens."""
    from authx import AuthX, AuthXConfig, TokenPayload

    app = FastAPI()
    users = BenchUsers()
    auth: AuthX[Any] = AuthX(
        config=AuthXConfig(
            JWT_SECRET_KEY=REFRESH_SECRET,
            JWT_ALGORITHM=ALGORITHM,
            JWT_TOKEN_LOCATION=["json"],
            JWT_REFRESH_JSON_KEY="refreshToken",
        )
    )
    auth.handle_errors(app)

    @app.post("/auth/refresh")
    async def refresh(
        payload: Annotated[TokenPayload, Depends(auth.refresh_token_required)],
    ) -> Response:
        user = users.by_subject(str(payload.sub))
        if user is None:
            return _unauthorized()
        return JSONResponse(
            {
                "accessToken": auth.create_access_token(uid=user.id),
                "refreshToken": auth.create_refresh_token(uid=user.id),
            },
            headers=NO_STORE,
        )

    async def mint(user: BenchUser) -> str:
        return auth.create_refresh_token(uid=user.id)

    _add_harness_routes(app, users, mint)
    return app


class LagTicker:
    """The event loop's lag: how much later than asked each 1 ms sleep wakes up, while a run
    is measured (a ticker left running costs every server on the core its wake-ups)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.stop()
        self.lags = []
        self.task = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.lags.append(loop.time() - asked - LAG_TICK_SECONDS)

    def take(self) -> dict[str, float]:
        self.stop()
        lags, self.lags = sorted(self.lags), []
        if not lags:
            return {"ticks": 0, "p99_ms": 0.0, "max_ms": 0.0}
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        return {"ticks": len(lags), "p99_ms": p99 * 1000, "max_ms": lags[-1] * 1000}


def _add_harness_routes(
    app: FastAPI, users: BenchUsers, mint: Minter, mint_bound: BoundMinter | None = None
) -> None:
    in_turn = users.in_turn()
    ticker = LagTicker()

    @app.post("/bench/lag", include_in_schema=False)
    async def start_lag() -> dict[str, bool]:
        ticker.start()
        return {"started": True}

    @app.get("/bench/lag", include_in_schema=False)
    async def lag() -> dict[str, float]:
        return ticker.take()

    @app.get("/bench/ready", include_in_schema=False)
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    def minter(jkt: str | None) -> Minter | None:
        """What mints for a request naming ``jkt`` or none; None: this app cannot bind."""
        if jkt is None:
            return mint
        if mint_bound is None:
            return None
        bind = mint_bound
        return lambda user: bind(user, jkt)

    @app.post("/bench/mint", include_in_schema=False)
    async def mint_tokens(request: Request) -> Any:
        asked = await request.json()
        count, make = int(asked["count"]), minter(asked.get("jkt"))
        if make is None:
            return JSONResponse({"detail": "no token family to bind"}, status_code=400)
        if not 0 < count <= MAX_MINT:
            return {"tokens": []}
        tokens: list[str] = []
        # A few at a time: stores with I/O (SQLite's threads, Redis) mint faster overlapped.
        while len(tokens) < count:
            batch = min(MINT_CONCURRENCY, count - len(tokens))
            tokens += await asyncio.gather(*(make(next(in_turn)) for _ in range(batch)))
        # The memory store (one process, for tests) holds every minted family: unfrozen, the
        # collector's full walks over them would grow each round and end up in the p99.
        freeze_heap()
        return {"tokens": tokens}
