"""The ``AuthLocalModule`` companion: ``POST /auth/login`` with a username and a password, and
with ``token_path`` the OAuth 2.0 token endpoint beside it (``token_endpoint.py``)."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.requests import Request
from starlette.responses import Response

from auth_refresh._utils import (
    IPAddress,
    client_address,
    is_active,
    is_unicode_text,
    resolve,
    user_id_of,
)
from auth_refresh.companions.authentication import AuthenticationModule
from auth_refresh.companions.passwords import (
    DEFAULT_PASSWORD_ATTRIBUTE,
    FailureFloor,
    HashingLimit,
    LoginDiagnostics,
    PasswordStorageService,
    cost_kind,
    default_hash_concurrency,
    rehash_if_outdated,
    start_turn,
    timed,
)
from auth_refresh.companions.token_endpoint import TokenEndpoint
from auth_refresh.exceptions import (
    AuthLocalBusyError,
    AuthLocalInvalidCredentialsError,
    AuthLocalTooManyLoginsError,
    ConfigurationError,
    InvalidRequestError,
)
from auth_refresh.flows.guards import AppFlows
from auth_refresh.registration.application import (
    AppRegistry,
    discoverable,
    module_lifespan,
    require_application,
    start_late,
)
from auth_refresh.registration.module import AuthRefreshModule
from auth_refresh.registration.routes import operation_id
from auth_refresh.settings import AuthLocalSettings, build_settings
from auth_refresh.telemetry import operation_span
from auth_refresh.transport.bodies import read_body_fields, single_field
from auth_refresh.transport.responses import (
    TokenPairBody,
    TokenResponder,
    error_responses,
    token_response,
)
from auth_refresh.types import (
    AuthLocalUserLookupServiceInterface,
    IssueTokenServiceInterface,
    TokenPair,
)

__all__ = ["AuthLocalModule"]

DEFAULT_LOGIN_PATH = "/auth/login"
# In characters, as the schema's maxLength counts them.
MAX_USERNAME_LENGTH = 320
MAX_PASSWORD_LENGTH = 4096


class AuthLocalModule:
    """Local login: verifies a username and password, answers with a token pair."""

    name = "AuthLocalModule.for_root"
    kind = "auth_local"
    is_global = True

    def __init__(
        self,
        user_lookup_service: AuthLocalUserLookupServiceInterface,
        issue_token_service: IssueTokenServiceInterface | None,
        password_storage_service: PasswordStorageService,
        path: str,
        settings: AuthLocalSettings | Mapping[str, Any] | None = None,
        password_attribute: str = DEFAULT_PASSWORD_ATTRIBUTE,
        token_path: str | None = None,
    ) -> None:
        self.user_lookup_service = user_lookup_service
        self.diagnostics = LoginDiagnostics(password_attribute)
        # Unset: the refresh registration's login service when there is one (a family per
        # login), else AuthenticationModule's; decided at startup.
        self._issuer_given = issue_token_service is not None
        self.issue_token_service = (
            issue_token_service or AuthenticationModule.for_root().issue_token_service
        )
        self.password_storage_service = password_storage_service
        self.path = path
        self.settings = build_settings(AuthLocalSettings, settings)
        hashes = self.settings.max_concurrent_hashes or default_hash_concurrency()
        self.hashing = HashingLimit(hashes, self.settings.hash_wait_seconds)
        # By default one client holds at most half the hashing, and never a username's whole
        # share: a flood from one address locks nobody out.
        per_client = self.settings.max_logins_per_client or max(1, hashes // 2)
        self.limits = LoginLimits(
            per_client,
            self.settings.max_logins_per_username or per_client + 1,
            self.settings.hash_wait_seconds,
        )
        self.failure_floor = FailureFloor()
        self.started = False
        self.security_schemes: dict[str, SecurityBase] = {}
        self.router = APIRouter(tags=["auth"], lifespan=module_lifespan(self))
        self.router.add_api_route(
            path,
            self.login,
            methods=["POST"],
            summary="Log in with a username and password",
            operation_id=operation_id("login", path),
            name=f"auth_refresh_login_{id(self):x}",
            responses={
                200: {"model": TokenPairBody, "description": "An access and a refresh token"},
                **error_responses(400, 401, 413, 429, 503),
            },
            openapi_extra={"requestBody": _credentials_body()},
        )
        self.route_name = discoverable(self, self.router, f"auth_refresh_login_{id(self):x}")
        if isinstance(issue_token_service, TokenResponder):
            issue_token_service.describe_route(self._login_route)
        self.token_endpoint = None if token_path is None else TokenEndpoint(self, token_path)

    @classmethod
    def for_root(
        cls,
        *,
        user_lookup_service: AuthLocalUserLookupServiceInterface,
        issue_token_service: IssueTokenServiceInterface | None = None,
        password_storage_service: PasswordStorageService | None = None,
        path: str = DEFAULT_LOGIN_PATH,
        settings: AuthLocalSettings | Mapping[str, Any] | None = None,
        password_attribute: str = DEFAULT_PASSWORD_ATTRIBUTE,
        token_path: str | None = None,
    ) -> AuthLocalModule:
        """The login route; the issue service defaults to the refresh registration's
        ``login_issue_token_service`` beside one, else to ``AuthenticationModule``'s.

        ``password_attribute`` names the user's hash attribute (``hashed_password`` in the
        FastAPI tutorial's models). ``token_path`` adds an OAuth 2.0 token endpoint there
        (password and refresh_token grants), beside a refresh registration.
        """
        return cls(
            user_lookup_service,
            issue_token_service,
            password_storage_service or PasswordStorageService(),
            path,
            settings,
            password_attribute,
            token_path,
        )

    def attach(self, app: FastAPI) -> None:
        """The same as ``app.include_router(module.router)``."""
        application = require_application(self.name, app)
        AppRegistry.install(application).add(self)
        application.include_router(self.router)

    async def startup(self, registry: AppRegistry | None) -> None:
        """Beside a refresh registration, issue its tokens: with rotation, a family per login."""
        found = registry.root(AuthRefreshModule.kind) if registry is not None else None
        refresh = found if isinstance(found, AuthRefreshModule) else None
        if refresh is None:
            pass
        elif not self._issuer_given:
            if self.issue_token_service is not refresh.login_issue_token_service:
                self.issue_token_service = refresh.login_issue_token_service
                refresh.login_issue_token_service.describe_route(self._login_route)
        elif refresh.container.settings().rotation and not getattr(
            self.issue_token_service, "starts_token_families", False
        ):
            raise ConfigurationError(
                f"{self.name}: issue_token_service starts no token families, but "
                f"{refresh.name} rotates refresh tokens (AUTH_REFRESH_ROTATION), so every "
                "refresh of a login's tokens would be a 401; leave issue_token_service "
                "unset, or pass issue_token_service=<refresh module>.login_issue_token_service"
            )
        if self.token_endpoint is not None:
            found_flow = None if refresh is None else refresh.flow
            self.token_endpoint.start(self.issue_token_service, found_flow)
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    def publish(self, flows: AppFlows) -> None:
        """A login route: no flow the guards use."""

    async def login(self, request: Request) -> Response:
        with operation_span("login"):
            return await self._login(request)

    async def _login(self, request: Request) -> Response:
        pair = await self.login_pair(request, lambda: read_body_fields(request))
        responder = self.issue_token_service
        # An issue service that owns a transport (the refresh module's cookie) answers itself.
        if isinstance(responder, TokenResponder):
            return responder.token_response(pair)
        return token_response(pair)

    async def login_pair(
        self, request: Request, fields: Callable[[], Awaitable[Mapping[str, Any] | None]]
    ) -> TokenPair:
        """The pair a login answers with: the username and password of the body's ``fields()``
        checked within the client's and the username's shares; ``AuthRefreshError``s else."""
        if not self.started:
            await start_late(self, request.app)
        responder = self.issue_token_service
        if isinstance(responder, TokenResponder):
            # Before the password is checked: a refused request costs no hashing.
            responder.check_request(request)
        # Before a login's body is read: a client over its share waits at next to no cost.
        async with self.limits.client(client_address(request, self.settings.trusted_proxies)):
            username, password = credentials_in(await fields())
            async with self.limits.username(username):
                user = await self._authenticate(username, password)
        return await resolve(self.issue_token_service.response_payload(user_id_of(user)))

    @property
    def _login_route(self) -> APIRoute:
        route = self.router.routes[0]
        assert isinstance(route, APIRoute)
        return route

    async def _authenticate(self, username: str, password: str) -> Any:
        """The user whose password this is; else ``AuthLocalInvalidCredentialsError``, after as
        long as any failed login takes (``FailureFloor``)."""
        user = await resolve(self.user_lookup_service.by_username(username))
        stored_hash = self.diagnostics.password_hash_of(user) if user is not None else None
        # Hashing is slow and memory-hard by design: off the event loop, a few at a time.
        matches, seconds = await self.hashing.run(
            timed, self.password_storage_service.verify, password, stored_hash
        )
        self.failure_floor.record(cost_kind(stored_hash), seconds)
        # A disabled account gets the same answer as a wrong password, after as long.
        if user is None or not matches or not is_active(user):
            # As long as any failed login, then as long again holding the client's place: a
            # client sending only wrong passwords hashes half the time at most.
            floor = self.failure_floor.seconds
            await asyncio.sleep(max(0.0, floor - seconds) + floor)
            raise AuthLocalInvalidCredentialsError()
        if stored_hash is not None:
            passwords, lookup = self.password_storage_service, self.user_lookup_service
            await rehash_if_outdated(lookup, passwords, self.hashing, user, password, stored_hash)
        return user


def credentials_in(fields: Mapping[str, Any] | None) -> tuple[str, str]:
    """The username and password of a login body's fields; ``InvalidRequestError`` otherwise."""
    if fields is None:
        raise InvalidRequestError("Send username and password as a JSON object or a form")
    username, password = single_field(fields, "username"), single_field(fields, "password")
    # The messages never repeat what was sent: the password must not come back.
    if not isinstance(username, str) or not username:
        raise InvalidRequestError("username is required and must be a non-empty string")
    if not isinstance(password, str) or not password:
        raise InvalidRequestError("password is required and must be a non-empty string")
    # Fields from a custom body reader too: a lone surrogate never reaches the lookup or hasher.
    if not (is_unicode_text(username) and is_unicode_text(password)):
        raise InvalidRequestError("username and password must be valid Unicode text")
    if len(username) > MAX_USERNAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequestError("username or password is too long")
    return username, password


def _credentials_body() -> dict[str, Any]:
    # Exactly what credentials_in accepts: both fields, non-empty strings, bounded.
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "minLength": 1, "maxLength": MAX_USERNAME_LENGTH},
            "password": {"type": "string", "minLength": 1, "maxLength": MAX_PASSWORD_LENGTH},
        },
        "required": ["username", "password"],
    }
    media = ("application/json", "application/x-www-form-urlencoded")
    return {"required": True, "content": {kind: {"schema": schema} for kind in media}}


# Fair shares of the hashing, per client address and per username: ``HashingLimit`` bounds
# login memory, but hands turns out in arrival order, so one client sending a hundred bad
# logins at once would fill its queue and everyone else's logins would wait behind them until
# they got a 503. These shares come first: a login over its client's (or username's) share
# waits for one of its places, in order, and after ``hash_wait_seconds`` gets a 429, having
# cost no hash; the others still find a turn, and a flood answered slowly cannot crowd the
# event loop either. The counts are per process; a key leaves with its last login.

# More distinct clients (or usernames) with a login in progress than this is real overload.
MAX_TRACKED_KEYS = 10_000


class SharedLimit:
    """At most ``limit`` logins in progress per key, for at most ``max_keys`` keys; a login
    waits at most ``wait_seconds`` for one of its key's places, in arrival order."""

    def __init__(self, limit: int, wait_seconds: float, max_keys: int = MAX_TRACKED_KEYS) -> None:
        if limit < 1 or wait_seconds <= 0 or max_keys < 1:
            raise ValueError("a shared limit needs limit >= 1, wait_seconds > 0, max_keys >= 1")
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.max_keys = max_keys
        self._lock = threading.Lock()  # one module may serve several event loops
        self._running: dict[str, int] = {}
        # Each key's waiting logins and their event loops, in arrival order.
        self._waiting: dict[str, OrderedDict[asyncio.Future[None], asyncio.AbstractEventLoop]] = {}

    def __len__(self) -> int:
        """How many keys have a login in progress."""
        return len(self._running)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """One of ``key``'s places while the block runs: ``AuthLocalTooManyLoginsError`` when
        none is free in time, ``AuthLocalBusyError`` when too many keys are tracked."""
        await self._acquire(key)
        try:
            yield
        finally:
            self._release(key)

    async def _acquire(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            running = self._running.get(key, 0)
            if running == 0 and len(self._running) >= self.max_keys:
                raise AuthLocalBusyError()
            if running < self.limit and key not in self._waiting:
                self._running[key] = running + 1
                return
            turn: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(key, OrderedDict())[turn] = loop
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_seconds)
        except BaseException as error:  # the wait timed out, or the request was cancelled
            with self._lock:
                waiting = self._waiting.get(key)
                handed_over = waiting is None or waiting.pop(turn, None) is None
                if waiting is not None and not waiting:
                    del self._waiting[key]
            if handed_over:  # a release gave this login the place as it gave up: pass it on
                self._release(key)
            if isinstance(error, TimeoutError):
                raise AuthLocalTooManyLoginsError() from None
            raise

    def _release(self, key: str) -> None:
        with self._lock:
            waiting = self._waiting.get(key)
            while waiting:
                turn, loop = waiting.popitem(last=False)
                if not waiting:
                    del self._waiting[key]
                try:
                    # The place passes to the next login: the running count stays.
                    loop.call_soon_threadsafe(start_turn, turn)
                    return
                except RuntimeError:  # that login's event loop is closed: it waits no more
                    continue
            if self._running[key] == 1:
                del self._running[key]
            else:
                self._running[key] -= 1


class LoginLimits:
    """The per-client and the per-username shares of one login route."""

    def __init__(self, per_client: int, per_username: int, wait_seconds: float) -> None:
        self.clients = SharedLimit(per_client, wait_seconds)
        self.usernames = SharedLimit(per_username, wait_seconds)

    def client(self, address: IPAddress | None) -> AbstractAsyncContextManager[None]:
        """A place for ``address``: an IPv6 client is its /64, which one host may own whole."""
        if isinstance(address, IPv6Address):
            key = str(IPv6Network((address, 64), strict=False))
        else:
            key = str(address or "")  # every client without a known address shares one place
        return self.clients.hold(key)

    def username(self, username: str) -> AbstractAsyncContextManager[None]:
        """A place for ``username``, however its letters are cased."""
        return self.usernames.hold(username.casefold())
