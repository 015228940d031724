"""DPoP at the request (RFC 9449): the proof a login, refresh, logout or guarded request
carries, checked against the URL the client saw, kept single-use in the registration's store,
and the key the tokens are bound to (``cnf.jkt``).

Entered only when a registration turns DPoP on, or a token is bound: with ``dpop`` off, no
request walks through here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.datastructures import URL
from starlette.requests import Request

from auth_refresh._utils import (
    IPNetwork,
    from_trusted_proxy,
    is_awaitable,
    provided,
    ready,
    resolve,
)
from auth_refresh.exceptions import ConfigurationError, DpopBindingError, InvalidDpopProofError
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.tokens.dpop import DpopNonces, DpopProof, DpopVerifier
from auth_refresh.transport.cookies import csrf_keys_of
from auth_refresh.types import CONFIRMATION_CLAIM, TokenPair

__all__ = [
    "DpopFlow",
    "bound_key",
    "bound_pair",
    "refuse_bound_token",
    "scheme_token",
    "url_as_seen",
]

_NONCE_KEY_CONTEXT = b"auth-refresh dpop nonce"
# Hosts a client may name: bounded, made-up ones only push older ones out.
CACHED_ORIGINS = 256


def url_as_seen(request: Request, trusted_proxies: Sequence[IPNetwork]) -> str:
    """The request's URL without query, as the client saw it: behind a trusted proxy, the scheme
    and host its ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` name (their last values: the
    ones the nearest proxy wrote)."""
    scope = request.scope
    server = scope.get("server")
    scheme, host = _origin(
        scope.get("scheme", "http"),
        request.headers.get("host"),
        tuple(server) if server is not None else None,
    )
    if trusted_proxies and from_trusted_proxy(request, trusted_proxies):
        scheme = _last(request, "x-forwarded-proto") or scheme
        host = _last(request, "x-forwarded-host") or host
    raw_path = request.scope.get("raw_path")
    # The path as sent (percent-encoded); normalized_url compares it.
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    return f"{scheme}://{host}{path}"


@functools.lru_cache(maxsize=CACHED_ORIGINS)
def _origin(scheme: str, host: str | None, server: tuple[Any, ...] | None) -> tuple[str, str]:
    # Starlette's own scheme and netloc of a request URL (its Host checks included), made once
    # per host a client names rather than with every request's whole URL.
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    url = URL(scope={"scheme": scheme, "server": server, "path": "/", "headers": headers})
    return url.scheme, url.netloc


def _last(request: Request, header: str) -> str | None:
    values = [v.strip() for value in request.headers.getlist(header) for v in value.split(",")]
    return values[-1] if values and values[-1] else None


def scheme_token(request: Request) -> str | None:
    """The token of an ``Authorization: DPoP <token>`` header (the scheme in any case), or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip(" ")
    return token if scheme.lower() == "dpop" and token and " " not in token else None


async def bound_pair(issuer: Any, subject: str, jkt: str) -> TokenPair:
    """A pair of ``issuer``'s (sync or async) bound to the DPoP key ``jkt``, without rotation."""
    claims = {"sub": subject, CONFIRMATION_CLAIM: {"jkt": jkt}}
    return {
        "accessToken": await resolve(issuer.access_token(claims)),
        "refreshToken": await resolve(issuer.refresh_token(claims)),
        "tokenType": "DPoP",
    }


def bound_key(claims: Mapping[str, Any]) -> str | None:
    """The ``jkt`` a verified token is bound to, or None; ``DpopBindingError`` for a ``cnf``
    that names no key thumbprint."""
    confirmation = claims.get(CONFIRMATION_CLAIM)
    if confirmation is None:
        return None
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise DpopBindingError(reason="malformed_cnf")
    return jkt


def refuse_bound_token() -> DpopBindingError:
    """The error for a bound token where DPoP is off: no proof can be checked."""
    return DpopBindingError(reason="dpop_off")


class DpopFlow:
    """DPoP for one refresh registration (``container``: its ``AuthRefreshContainer``); the
    access guard uses the global registration's."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self._made: tuple[object, object, DpopVerifier] | None = None

    def verifier(self, settings: AuthRefreshSettings) -> DpopVerifier:
        """The proof checks the settings ask for: made once per settings and issue service."""
        issuer = ready(provided(self.container.issuer)) if settings.dpop_nonce else None
        made = self._made
        if made is None or made[0] is not settings or made[1] is not issuer:
            nonces = DpopNonces(_nonce_key(settings, issuer)) if settings.dpop_nonce else None
            verifier = DpopVerifier(settings.dpop_algorithms, settings.dpop_proof_seconds, nonces)
            made = self._made = (settings, issuer, verifier)
        return made[2]

    async def refresh_key(self, request: Request, claims: Mapping[str, Any]) -> str | None:
        """For a refresh or logout: the key its successor is bound to (the proof's), or None.

        A bound token needs a proof of its own key: any other refusal happens before the store
        is asked, so a thief's attempt never ends the session."""
        settings: AuthRefreshSettings = provided(self.container.settings)
        bound = bound_key(claims)
        if settings.dpop == "off":
            if bound is not None:
                raise refuse_bound_token()
            return None
        verifier = self.verifier(settings)
        proof = self._proof(request, settings, verifier)
        if bound is not None and (proof is None or proof.jkt != bound):
            reason = "no_proof" if proof is None else "other_key"
            raise DpopBindingError(algorithms=verifier.algorithms, reason=reason)
        return await self._first_use(proof, verifier)

    def require_proof(self, request: Request) -> None:
        """Refuse, before any work, a request without a proof where one is required."""
        if not request.headers.get("dpop"):
            verifier = self.verifier(provided(self.container.settings))
            raise verifier.refuse("no_proof", token_sent=False)

    async def login_key(self, request: Request) -> str | None:
        """For a login: the key its tokens are bound to, or None (no proof, ``optional``)."""
        settings: AuthRefreshSettings = provided(self.container.settings)
        verifier = self.verifier(settings)
        return await self._first_use(self._proof(request, settings, verifier), verifier)

    async def check_access(
        self, request: Request, token: str, claims: Mapping[str, Any], *, sent_as_dpop: bool
    ) -> None:
        """For a guarded request: a bound token only with the ``DPoP`` scheme and a proof of
        its key for this token (``ath``); an unbound one as ``Bearer`` unless ``required``."""
        settings: AuthRefreshSettings = provided(self.container.settings)
        verifier = self.verifier(settings)
        bound = bound_key(claims)
        if not sent_as_dpop:
            if bound is not None:
                raise DpopBindingError(algorithms=verifier.algorithms, reason="bearer")
            if settings.dpop == "required":
                raise verifier.refuse("no_proof", token_sent=False)
            return
        if bound is None:
            raise DpopBindingError(algorithms=verifier.algorithms, reason="unbound")
        proof = self._proof(request, settings, verifier, access_token=token)
        if proof is None:
            raise verifier.refuse("no_proof")
        if proof.jkt != bound:
            raise DpopBindingError(algorithms=verifier.algorithms, reason="other_key")
        await self._first_use(proof, verifier)

    def _proof(
        self,
        request: Request,
        settings: AuthRefreshSettings,
        verifier: DpopVerifier,
        *,
        access_token: str | None = None,
    ) -> DpopProof | None:
        # Exactly one DPoP header (§4.3 step 1); none is fine unless required.
        headers = request.headers.getlist("dpop")
        if not headers:
            if settings.dpop == "required":
                raise verifier.refuse("no_proof", token_sent=False)
            return None
        if len(headers) > 1:
            raise verifier.refuse("several_proofs")
        return verifier.verify(
            headers[0],
            method=request.method,
            url=url_as_seen(request, settings.trusted_proxies),
            now=provided(self.container.clock)(),
            access_token=access_token,
        )

    async def _first_use(self, proof: DpopProof | None, verifier: DpopVerifier) -> str | None:
        # The proof's jti, never seen within its window (§11.1): kept in the store till then.
        if proof is None:
            return None
        store = provided(self.container.store)
        store = await store if is_awaitable(store) else store
        # getattr, not isinstance of the runtime Protocol: that walks its members each time.
        first_use = getattr(store, "first_use", None)
        if first_use is None:
            raise ConfigurationError(
                "DPoP needs a store that keeps proofs (ProofReplayCache.first_use); "
                f"{type(store).__name__} does not"
            )
        now = provided(self.container.clock)()
        if not await first_use(proof.replay_key, expires_at=proof.iat + verifier.window, now=now):
            raise InvalidDpopProofError(algorithms=verifier.algorithms, reason="replayed")
        return proof.jkt


def _nonce_key(settings: AuthRefreshSettings, issuer: object) -> bytes:
    # Derived as the CSRF key is (from AUTH_REFRESH_CSRF_SECRET or the refresh signing key), for
    # a purpose of its own: every worker makes and accepts the same nonces.
    try:
        key = csrf_keys_of(settings, issuer)[0]
    except ConfigurationError:
        raise ConfigurationError(
            "AUTH_REFRESH_DPOP_NONCE with a custom issue service needs AUTH_REFRESH_CSRF_SECRET: "
            "the nonces are keyed"
        ) from None
    return hmac.new(key, _NONCE_KEY_CONTEXT, hashlib.sha256).digest()
