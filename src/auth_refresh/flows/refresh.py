"""One refresh registration's request walks: refresh, logout, a login's pair, the sessions.

``RefreshFlow`` is what the built-in routes, the guards and a login call; the registration
(``AuthRefreshModule``) builds it and starts it. Everything a request needs comes from the
registration's container providers when the request comes, so an override made at any time
applies; a provider that gives an awaitable (an async ``Resource``, a ``Coroutine``, an async
factory) is awaited, a plain one costs no await. What depends on the settings alone (the cookie
transport) is made once per settings.
The refresh walk: extract → verify → rotate in the store → look up the user → answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, cast

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import (
    MaybeAwaitable,
    is_active,
    is_awaitable,
    provided,
    ready,
    resolve,
    user_id_of,
)
from auth_refresh.exceptions import (
    AuthRefreshError,
    ConfigurationError,
    InvalidTokenError,
    MissingTokenError,
)
from auth_refresh.flows.dpop import DpopFlow, bound_pair
from auth_refresh.flows.readiness import Readiness, registration_readiness
from auth_refresh.flows.session_admin import SessionAdmin
from auth_refresh.rotation import TokenRotationService, family_of, refuse_unjudgeable
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.telemetry import operation_span
from auth_refresh.transport.cookies import CookieTransport, csrf_keys_of
from auth_refresh.transport.paths import RoutedPaths
from auth_refresh.transport.responses import NO_STORE
from auth_refresh.types import CONFIRMATION_CLAIM, IssuedPair, Refreshed, TokenPair

__all__ = ["LoginIssueTokenService", "RefreshFlow", "pending_successors"]

security_log = logging.getLogger("auth_refresh.security")


class RefreshFlow:
    """The request walks of one refresh registration.

    ``container`` is the registration's ``AuthRefreshContainer``; ``start(app)`` starts the
    registration when a request comes before its application's lifespan ran (a mount).
    ``cookie_paths`` are the refresh and logout routes, where the refresh cookie goes.
    """

    def __init__(
        self,
        name: str,
        container: Any,
        cookie_paths: RoutedPaths,
        start: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.name = name
        self.container = container
        self.cookie_paths = cookie_paths
        self.started = False
        self._start = start
        self._transport: tuple[object, object, CookieTransport] | None = None
        self._rotation_service: TokenRotationService | None = None
        self._default_rotation = _makes_default_rotation(container)
        self.sessions = SessionAdmin(self._rotation)
        self.dpop = DpopFlow(container)

    def transport(self, settings: AuthRefreshSettings | None = None) -> CookieTransport | None:
        """The cookie transport the settings ask for, or None: made once per settings and
        issue service."""
        container = self.container
        if settings is None:
            settings = provided(container.settings)
        if not settings.cookie_transport:
            return None
        issuer = ready(provided(container.issuer)) if settings.csrf_secret is None else None
        made = self._transport
        if made is None or made[0] is not settings or made[1] is not issuer:
            keys = csrf_keys_of(settings, issuer)
            transport = CookieTransport.from_settings(settings, self.cookie_paths.written, keys)
            made = self._transport = (settings, issuer, transport)
        return made[2]

    # -- the routes --------------------------------------------------------------------------

    async def refresh_route(self, request: Request) -> Response:
        """``POST /auth/refresh``."""
        with operation_span("refresh"):
            refreshed = await self.refresh(request)
            assert refreshed.issued is not None  # asked for
            return self.token_response(refreshed.issued, request)

    async def logout_route(self, request: Request) -> Response:
        """``POST /auth/logout``."""
        with operation_span("logout"):
            await self.logout(request)
            return self.logout_response(request)

    # -- the walks ---------------------------------------------------------------------------

    async def refresh(
        self, request: Request, *, issue: bool = True, token: str | None = None
    ) -> Refreshed:
        """Authenticate ``request`` by its refresh token (``token``, else the extractor's) and
        make the pair that answers it.

        With rotation the token is consumed in the store and the pair is its successor;
        without, the pair is a new one from the issue service (made only when ``issue``).
        Raises a 401 error for any refusal.
        """
        if not self.started:
            await self._start(request.app)
        _answering.set(request)
        container = self.container
        clock = provided(container.clock)
        arrived_at: float = clock()
        settings: AuthRefreshSettings = provided(container.settings)
        claims = await self._verified_claims(settings, request, token)
        subject: str = claims["sub"]
        refuse_unjudgeable(claims, rotation=settings.rotation)
        # Entered only with DPoP on or a bound token: its key checked before any store step.
        dpop = settings.dpop != "off" or CONFIRMATION_CLAIM in claims
        jkt = await self.dpop.refresh_key(request, claims) if dpop else None
        successor: IssuedPair | None = None
        if settings.rotation:
            # Before the user lookup: a replayed token revokes its family whoever it names.
            rotation = await self._rotation_of(settings, clock)
            successor = await rotation.rotate_issued(claims, arrived_at=arrived_at, jkt=jkt)
        lookup = provided(container.user_lookup)
        lookup = await lookup if is_awaitable(lookup) else lookup
        user = await resolve(lookup.by_subject(subject))
        if user is None:
            security_log.info("refresh token refused: unknown subject")
            raise InvalidTokenError(reason="unknown_subject")
        if not is_active(user):
            security_log.info("refresh token refused: inactive user")
            raise InvalidTokenError(reason="inactive_user")
        if successor is None and issue:
            successor = await self._unrotated_pair(user_id_of(user), jkt)
        return Refreshed(user, successor)

    async def authenticate(self, request: Request) -> Any:
        """The user the request's refresh token names (a guard); with rotation the token is
        consumed and ``issue(user, request)`` gives its successor."""
        refreshed = await self.refresh(request, issue=False)
        if refreshed.issued is not None:
            pending_successors(request)[self] = refreshed.issued.pair
        return refreshed.user

    async def issue(self, user: Any, request: Request | None = None) -> TokenPair:
        """The successor of the token this flow consumed for ``request``, else a new pair."""
        if request is not None:
            _answering.set(request)
            successor = pending_successors(request).pop(self, None)
            if successor is not None:
                return successor
        return await self.issue_for_subject(user_id_of(user), request)

    async def issue_for_subject(self, subject: str, request: Request | None = None) -> TokenPair:
        """A new pair for ``subject``; with rotation, the first of a new token family: a
        session, labelled with ``request``'s ``User-Agent`` (and client IP, if kept)."""
        return (await self.issue_pair(subject, request)).pair

    async def issue_pair(self, subject: str, request: Request | None = None) -> IssuedPair:
        """``issue_for_subject``, with the family and expiry its answer needs."""
        await self.ensure_started()
        container = self.container
        settings: AuthRefreshSettings = provided(container.settings)
        jkt = None
        if request is not None and settings.dpop != "off":
            jkt = await self.dpop.login_key(request)
        if settings.rotation:
            rotation = await self._rotation_of(settings, provided(container.clock))
            if request is None:
                return await rotation.start_family_issued(subject)
            client = request.client
            return await rotation.start_family_issued(
                subject,
                user_agent=request.headers.get("user-agent"),
                client_ip=client.host if client is not None else None,
                jkt=jkt,
            )
        return await self._unrotated_pair(subject, jkt)

    async def logout(self, request: Request) -> None:
        """Revoke the family of the request's refresh token."""
        if not self.started:
            await self._start(request.app)
        _answering.set(request)
        settings: AuthRefreshSettings = provided(self.container.settings)
        claims = await self._verified_claims(settings, request)
        if settings.dpop != "off" or CONFIRMATION_CLAIM in claims:
            await self.dpop.refresh_key(request, claims)
        await self.sessions.revoke_family(family_of(claims))

    def check_request(self, request: Request) -> None:
        """Refuse, before any work, a request a cookie transport must not answer (cross-site)."""
        transport = self.transport()
        if transport is not None:
            transport.refuse_cross_site(request)

    # -- the answers -------------------------------------------------------------------------

    def token_response(
        self, pair: TokenPair | IssuedPair, request: Request | None = None
    ) -> Response:
        """The answer carrying ``pair``: JSON, or the refresh cookie with cookie transport (its
        ``Path`` the routes' for ``request``, by default the last this task's walks took)."""
        transport = self.transport()
        if transport is not None:
            return transport.token_response(pair, self._cookie_paths(request))
        return JSONResponse(
            dict(pair.pair if isinstance(pair, IssuedPair) else pair), headers=NO_STORE
        )

    def logout_response(self, request: Request | None = None) -> Response:
        """The answer to a logout: 204, clearing the refresh cookie with cookie transport."""
        response = Response(status_code=204, headers=NO_STORE)
        transport = self.transport()
        if transport is None:
            return response
        return transport.clear(response, self._cookie_paths(request))

    async def ensure_started(self) -> None:
        """Start the registration if its application's lifespan never ran."""
        if not self.started:
            await self._start(None)

    async def readiness(self, request: Request | None = None) -> Readiness:
        """Whether this registration can serve: its store answers (within 2 s) and holds
        this release's schema. A request starts the registration if its lifespan never ran."""
        return await registration_readiness(self.container, self.started, self._start, request)

    # -- internals ---------------------------------------------------------------------------

    def _cookie_paths(self, request: Request | None) -> tuple[str, ...]:
        request = request or _answering.get()
        return self.cookie_paths.written if request is None else self.cookie_paths.of(request)

    async def _verified_claims(
        self, settings: AuthRefreshSettings, request: Request, token: str | None = None
    ) -> Mapping[str, Any]:
        # Extract and verify: no I/O but what custom extractors or verify_token do.
        transport = self.transport(settings)
        if transport is not None:
            transport.refuse_cross_site(request)
        container = self.container
        if token is None:
            extractor = provided(container.extractor)
            extractor = await extractor if is_awaitable(extractor) else extractor
            token = await resolve(extractor(request))
        if not isinstance(token, str) or not token:
            raise MissingTokenError()
        verify = settings.verify_token
        if verify is None:
            verifier = provided(container.verifier)
            verifier = await verifier if is_awaitable(verifier) else verifier
            verify = verifier.refresh_token
        try:
            claims = await resolve(verify(token))
        except AuthRefreshError:
            raise
        except Exception as error:
            # The verify_token contract: raising means the token is invalid.
            security_log.info("refresh token refused by verify_token: %s", type(error).__name__)
            raise InvalidTokenError(reason="verify_token_failed") from None
        subject = claims.get("sub") if isinstance(claims, Mapping) else None
        if not isinstance(subject, str) or not subject:
            security_log.info("refresh token refused: no subject")
            raise InvalidTokenError(reason="no_subject")
        if transport is not None and transport.came_from_cookie(request, token):
            # The browser sends the cookie on its own: only the page can add the header.
            # Checked after the signature (no I/O) and before any store step.
            transport.check_csrf(request, token, claims)
        return cast(Mapping[str, Any], claims)

    async def _unrotated_pair(self, subject: str, jkt: str | None) -> IssuedPair:
        # Without rotation: the issue service's pair, or one bound to the DPoP key.
        issuer = provided(self.container.issuer)
        issuer = await issuer if is_awaitable(issuer) else issuer
        pair = issuer.response_payload(subject) if jkt is None else bound_pair(issuer, subject, jkt)
        return IssuedPair(await resolve(pair))

    async def _rotation(self, operation: str) -> TokenRotationService:
        await self.ensure_started()
        settings: AuthRefreshSettings = provided(self.container.settings)
        if not settings.rotation:
            raise ConfigurationError(
                f"{self.name}: {operation} needs rotation; AUTH_REFRESH_ROTATION is false"
            )
        return await self._rotation_of(settings, provided(self.container.clock))

    async def _rotation_of(
        self, settings: AuthRefreshSettings, clock: Callable[[], float]
    ) -> TokenRotationService:
        # The container's own rotation Factory's service, kept while its dependencies stay.
        container = self.container
        if container.rotation.last_overriding is not None or not self._default_rotation:
            return cast(TokenRotationService, await resolve(container.rotation()))
        store, issuer = provided(container.store), provided(container.issuer)
        self._rotation_service = TokenRotationService.reused(
            self._rotation_service,
            await store if is_awaitable(store) else store,
            await issuer if is_awaitable(issuer) else issuer,
            settings,
            clock,
        )
        return self._rotation_service


def _makes_default_rotation(container: Any) -> bool:
    # A container subclass may make its rotation service otherwise: then it is asked each time.
    made = container.rotation
    return getattr(made, "cls", None) is TokenRotationService and all(
        getattr(made, "kwargs", {}).get(name) is getattr(container, name)
        for name in ("store", "issuer", "settings", "clock")
    )


def pending_successors(request: Request) -> dict[RefreshFlow, TokenPair]:
    """The pairs a guard's refresh made, until the route hands them over; on the request's
    scope state, so the guard and the route see the same request."""
    successors: dict[RefreshFlow, TokenPair] | None = getattr(
        request.state, "auth_refresh_successors", None
    )
    if successors is None:
        successors = {}
        request.state.auth_refresh_successors = successors
    return successors


# The request a walk took last in this task: module.token_response(pair)'s, for cookie paths.
_answering: ContextVar[Request | None] = ContextVar("auth_refresh_answering", default=None)
# The login request being answered (check_request comes first): its client labels the session.
_login_request: ContextVar[Request | None] = ContextVar("auth_refresh_login", default=None)
# The pair it was given, until the login answers with it.
_login_pair: ContextVar[IssuedPair | None] = ContextVar("auth_refresh_login_pair", default=None)


class LoginIssueTokenService:
    """The issue service to give a login module (``module.login_issue_token_service``).

    ``describe_route`` is the registration's: it documents the login route's answer."""

    # What a login module checks beside a rotating refresh module (tokens with a family).
    starts_token_families = True

    def __init__(self, flow: RefreshFlow, describe_route: Callable[[APIRoute], None]) -> None:
        self.flow = flow
        self.describe_route = describe_route

    def access_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        return _signed(provided(self.flow.container.issuer), "access_token", payload)

    def refresh_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        return _signed(provided(self.flow.container.issuer), "refresh_token", payload)

    async def response_payload(self, user_id: str) -> TokenPair:
        issued = await self.flow.issue_pair(user_id, _login_request.get())
        _login_pair.set(issued)
        return issued.pair

    def check_request(self, request: Request) -> None:
        """Refuse a login the refresh registration's transport must not answer (cross-site,
        with cookie transport)."""
        _login_request.set(request)
        self.flow.check_request(request)
        if provided(self.flow.container.settings).dpop == "required":
            self.flow.dpop.require_proof(request)

    def token_response(self, pair: TokenPair) -> Response:
        """The login answer, in the refresh registration's transport (the cookie, when on)."""
        issued = _login_pair.get()
        return self.flow.token_response(
            issued if issued is not None and issued.pair is pair else pair, _login_request.get()
        )


def _signed(issuer: Any, method: str, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
    # The issue service's token; from an async provider's service, awaitable.
    if not is_awaitable(issuer):
        token: MaybeAwaitable[str] = getattr(issuer, method)(payload)
        return token

    async def signed() -> str:
        return await resolve(getattr(await issuer, method)(payload))

    return signed()
