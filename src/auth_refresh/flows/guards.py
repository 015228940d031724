"""The two guards, FastAPI dependencies, and the access token's walk.

``AuthRefreshGuard`` yields the user a refresh token names (``RefreshFlow.authenticate``);
``AuthJwtGuard`` the user an access token names (``AccessFlow.authenticate``). Unqualified, each
uses the application's global registration, found in ``app.state`` as ``AppFlows``; when the
application's lifespan never ran, the registration starts its modules first.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends
from fastapi.openapi.models import HTTPBase
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from auth_refresh._utils import is_active, is_awaitable, provided, ready, resolve
from auth_refresh.exceptions import AuthJwtUnauthorizedError, AuthRefreshError
from auth_refresh.flows.dpop import DpopFlow, refuse_bound_token, scheme_token
from auth_refresh.flows.refresh import RefreshFlow, pending_successors
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.stores.sealing import SESSION_ID_FORMAT
from auth_refresh.stores.session_cache import session_cache
from auth_refresh.transport.schemes import access_scheme
from auth_refresh.types import CONFIRMATION_CLAIM, SESSION_CLAIM

__all__ = [
    "APP_FLOWS",
    "GUARD_MARKER",
    "AccessFlow",
    "AppFlows",
    "AuthJwtGuard",
    "AuthRefreshGuard",
    "claims_of",
    "guard_marker_name",
    "session_active",
    "start_applications_with",
]

# Where the registrations leave ``AppFlows`` on ``app.state``.
APP_FLOWS = "auth_refresh_flows"
log = logging.getLogger("auth_refresh")

# The security scheme a refresh guard names in its route's OpenAPI (registration/openapi.py
# replaces it with where the registration reads the token, known at startup).
GUARD_MARKER = "AuthRefreshGuard"


class AccessFlow:
    """The access-token walk of one ``AuthJwtModule``: extract, verify, check the session,
    look up the user. ``container`` is its ``AuthJwtContainer``."""

    def __init__(self, container: Any, start: Callable[[Any], Awaitable[None]]) -> None:
        self.container = container
        self.started = False
        self._start = start

    async def authenticate(self, request: Request) -> Any:
        """The user the request's access token names; raises a 401 error otherwise."""
        if not self.started:
            await self._start(request.app)
        dpop = _dpop_of(request)
        if dpop is None:
            return await self._authenticate(request, None)
        try:
            return await self._authenticate(request, dpop)
        except AuthJwtUnauthorizedError as error:
            # RFC 9449 §7.1: the challenge names the DPoP scheme and its algorithms.
            settings = provided(dpop.container.settings)
            bearer_accepted = settings.dpop != "required"
            error.challenge_dpop(tuple(settings.dpop_algorithms), bearer_accepted=bearer_accepted)
            raise

    async def _authenticate(self, request: Request, dpop: DpopFlow | None) -> Any:
        container = self.container
        # An async provider's value is awaited; a plain one costs no await.
        extractor = provided(container.extractor)
        extractor = await extractor if is_awaitable(extractor) else extractor
        token = await resolve(extractor(request))
        sent_as_dpop = False
        if dpop is not None and not token:
            # RFC 9449 §7.1: Authorization: DPoP <token>, beside the extractor's scheme.
            token = scheme_token(request)
            sent_as_dpop = token is not None
        if not isinstance(token, str) or not token:
            raise AuthJwtUnauthorizedError(token_sent=False)
        verifier = provided(container.verifier)
        verifier = await verifier if is_awaitable(verifier) else verifier
        try:
            claims = await resolve(verifier.access_token(token))
        except AuthRefreshError as error:
            if error.status_code != 401:
                raise
            raise AuthJwtUnauthorizedError() from None
        except Exception:  # a verify service raising means the token is invalid
            raise AuthJwtUnauthorizedError() from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthJwtUnauthorizedError()
        if dpop is not None:
            await dpop.check_access(request, token, claims, sent_as_dpop=sent_as_dpop)
        elif CONFIRMATION_CLAIM in claims:
            raise refuse_bound_token()
        session_id = claims.get(SESSION_CLAIM)
        if session_id is not None and not await _session_active(request, session_id, subject):
            raise AuthJwtUnauthorizedError()
        lookup = provided(container.user_lookup)
        lookup = await lookup if is_awaitable(lookup) else lookup
        user = await resolve(lookup.by_subject(subject))
        if user is None or not is_active(user):
            raise AuthJwtUnauthorizedError()
        request.state.auth_jwt_claims = claims
        return user


@dataclass
class AppFlows:
    """The flows of an application's global registrations, for unqualified guards and the
    access guard's session check."""

    refresh: RefreshFlow | None = None
    access: AccessFlow | None = None


def _app_flows(request: Request) -> AppFlows | None:
    flows = getattr(request.app.state, APP_FLOWS, None)
    return flows if isinstance(flows, AppFlows) else None


def _dpop_of(request: Request) -> DpopFlow | None:
    # The global refresh registration's DPoP, when it turns DPoP on.
    flows = _app_flows(request)
    refresh = flows.refresh if flows is not None else None
    if refresh is None or provided(refresh.container.settings).dpop == "off":
        return None
    return refresh.dpop


# How the registration starts the modules of an application whose lifespan never ran.
_start_application: list[Callable[[Any], Awaitable[None]]] = []


def start_applications_with(start: Callable[[Any], Awaitable[None]]) -> None:
    """Set how unqualified guards start an application's modules (the registration's)."""
    _start_application[:] = [start]


async def _global_flow(request: Request, kind: str) -> Any:
    # The application's global registration of ``kind`` ("refresh" or "access"), once started.
    flows = _app_flows(request)
    flow = getattr(flows, kind) if flows is not None else None
    if flow is None:
        for start in _start_application:
            await start(request.app)
        flows = _app_flows(request)
        flow = getattr(flows, kind) if flows is not None else None
    return flow


async def _session_active(request: Request, session_id: object, subject: str) -> bool:
    if not isinstance(session_id, str) or SESSION_ID_FORMAT.fullmatch(session_id) is None:
        return False
    flows = _app_flows(request)
    refresh = flows.refresh if flows is not None else None
    if refresh is None:
        return True  # no store here to ask: as for a token without a session
    return await session_active(refresh, session_id, subject)


async def session_active(flow: RefreshFlow, session_id: str, subject: str) -> bool:
    """Whether the session an access token names is live in ``flow``'s registration (the
    access guard's check); True without rotation, where no session is kept."""
    if SESSION_ID_FORMAT.fullmatch(session_id) is None:
        return False
    await flow.ensure_started()
    container = flow.container
    settings: AuthRefreshSettings = provided(container.settings)
    if not settings.rotation:
        return True
    # Every guarded request passes here: the cache directly, no rotation service made.
    store: RefreshTokenStore = provided(container.store)
    store = await store if is_awaitable(store) else store
    return await session_cache(store).is_active(
        store,
        session_id,
        subject,
        clock=provided(container.clock),
        interval=settings.session_check_interval,
        stale=settings.session_check_stale_seconds,
    )


def claims_of(request: Request) -> Any:
    """The claims of the access token an ``AuthJwtGuard`` accepted for ``request``, or None."""
    return getattr(request.state, "auth_jwt_claims", None)


class _HasRefreshFlow(Protocol):
    flow: RefreshFlow


def guard_marker_name(flow: RefreshFlow | None) -> str:
    """The marker scheme of the guards of ``flow`` (None: the global registration's)."""
    return GUARD_MARKER if flow is None else f"{GUARD_MARKER}{id(flow):x}"


class _GuardMarker(SecurityBase):
    # A security dependency that reads nothing: FastAPI lists its name in the operation's
    # security, which tells the application's openapi() which registration guards the route.
    def __init__(self, flow: RefreshFlow | None) -> None:
        self.model = HTTPBase(scheme="bearer")
        self.scheme_name = guard_marker_name(flow)

    async def __call__(self) -> None:
        return None


class AuthRefreshGuard:
    """Authenticates a request by its refresh token: ``Depends(AuthRefreshGuard())``.

    Without a module it uses the application's global registration (``for_root``). Guards of
    the same registration are equal, so ``app.dependency_overrides[AuthRefreshGuard()]``
    replaces them. With rotation the token is consumed: the route must answer with
    ``module.token_response(await module.issue(user, request))``, the successor pair, or the
    client's next refresh is a reuse that revokes its session (a warning names such a route).
    """

    __signature__: inspect.Signature

    def __init__(self, module: _HasRefreshFlow | None = None) -> None:
        self.flow = module.flow if module is not None else None
        # As AuthJwtGuard's scheme: FastAPI reads the dependency's parameters from here.
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
                ),
                inspect.Parameter(
                    "marker",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[None, Depends(_GuardMarker(self.flow))],
                    default=None,
                ),
            ]
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthRefreshGuard) and other.flow is self.flow

    def __hash__(self) -> int:
        return hash((AuthRefreshGuard, id(self.flow)))

    async def __call__(self, request: Request, marker: None = None) -> AsyncIterator[Any]:
        flow = self.flow
        if flow is None:
            flow = await _global_flow(request, "refresh")
            if flow is None:
                raise RuntimeError(
                    "AuthRefreshGuard() needs AuthRefreshModule.for_root(...) attached to the "
                    "application; pass a module to guard with a feature registration"
                )
        yield await flow.authenticate(request)
        # After the route, unless it raised: was the successor pair handed over?
        _warn_if_successor_kept(flow, request)


def _warn_if_successor_kept(flow: RefreshFlow, request: Request) -> None:
    """Log a warning naming the route when it kept the successor pair from the client."""
    if pending_successors(request).pop(flow, None) is None:
        return
    route = request.scope.get("route")
    log.warning(
        "%s: %s %s consumed a refresh token but did not answer with its successor "
        "(module.token_response(await module.issue(user, request))): the client's next "
        "refresh is a reuse that revokes its session",
        flow.name,
        request.method,
        getattr(route, "path", request.url.path),
    )


class _HasAccessFlow(Protocol):
    flow: AccessFlow


class AuthJwtGuard:
    """Authenticates a request by its access token: ``Depends(AuthJwtGuard())``.

    Without a module it uses the application's ``AuthJwtModule``. Guards of the same
    registration are equal, so ``app.dependency_overrides[AuthJwtGuard()] = fake_user``
    replaces them. The route's OpenAPI shows the lock of the scheme the extractor reads.
    """

    __signature__: inspect.Signature

    def __init__(self, module: _HasAccessFlow | None = None) -> None:
        self.flow = module.flow if module is not None else None
        registered = (
            ready(provided(self.flow.container.extractor)) if self.flow is not None else None
        )
        scheme = access_scheme(registered)
        # FastAPI reads the dependency's parameters from its signature: the security scheme
        # is one of them, so the operation names it and Swagger UI sends the token.
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
                ),
                inspect.Parameter(
                    "credentials",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[Any, Depends(scheme)],
                    default=None,
                ),
            ]
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthJwtGuard) and other.flow is self.flow

    def __hash__(self) -> int:
        return hash((AuthJwtGuard, id(self.flow)))

    async def __call__(self, request: Request, credentials: Any = None) -> Any:
        flow = self.flow
        if flow is None:
            flow = await _global_flow(request, "access")
            if flow is None:
                raise RuntimeError("AuthJwtGuard() needs AuthJwtModule.for_root(...) attached")
        return await flow.authenticate(request)
