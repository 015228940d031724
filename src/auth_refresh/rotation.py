"""Refresh-token rotation: a login starts a token family, each refresh rotates it in the store,
and a consumed token that comes back revokes the whole family.

A refresh token names its family in the ``fam`` claim; its ``jti`` is its id in the family. The
successor pair is signed *before* the store step, so the step can record it atomically and hand
the same pair to every repeat within the grace window. The access tokens of a family name its
session (``sid``, a one-way digest of the family id); every revocation made here is marked at
once in this process's session cache.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from auth_refresh._utils import resolve, unverified_claims
from auth_refresh.exceptions import ConfigurationError, InvalidTokenError
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.stores.base import (
    RefreshTokenStore,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.stores.sealing import (
    SESSION_ID_FORMAT,
    open_pair,
    seal_pair,
    session_id_of,
    token_digest,
)
from auth_refresh.stores.session_cache import session_cache
from auth_refresh.telemetry import record_refresh, store_step
from auth_refresh.tokens.jwt import IssueTokenService
from auth_refresh.types import (
    AUTH_TIME_CLAIM,
    CONFIRMATION_CLAIM,
    FAMILY_CLAIM,
    SESSION_CLAIM,
    IssuedPair,
    IssueTokenServiceInterface,
    TokenPair,
)

__all__ = [
    "TokenReuseEvent",
    "TokenRotationService",
    "family_of",
    "refuse_unjudgeable",
]

# A client label is short: a User-Agent is cut to this many characters.
USER_AGENT_CHARACTERS = 256
# 16 random bytes: 128 bits, as the jti.
FAMILY_ID_BYTES = 16

security_log = logging.getLogger("auth_refresh.security")
# What the store is given to keep when there is no grace window to answer within.
NO_PAIR: TokenPair = {"accessToken": "", "refreshToken": ""}


@dataclass(frozen=True)
class TokenReuseEvent:
    """A consumed refresh token came back after the grace window; its family is revoked."""

    family_id: str
    subject: str | None
    detected_at: float


class TokenRotationService:
    """Starts, rotates and revokes token families in ``store``; tokens come from ``issuer``."""

    def __init__(
        self,
        store: RefreshTokenStore,
        issuer: IssueTokenServiceInterface,
        settings: AuthRefreshSettings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.settings = settings
        self.clock = clock

    @classmethod
    def reused(
        cls,
        made: TokenRotationService | None,
        store: RefreshTokenStore,
        issuer: IssueTokenServiceInterface,
        settings: AuthRefreshSettings,
        clock: Callable[[], float],
    ) -> TokenRotationService:
        """``made`` if it has these dependencies, else a service of them: a request walk keeps
        one instead of making one per request."""
        if (
            made is None
            or made.store is not store
            or made.issuer is not issuer
            or made.settings is not settings
            or made.clock is not clock
        ):
            return cls(store, issuer, settings, clock)
        return made

    async def start_family(
        self, subject: str, *, user_agent: str | None = None, client_ip: str | None = None
    ) -> TokenPair:
        """The first pair of a new family for ``subject`` (what a login answers with); the
        client's ``User-Agent`` labels the session, and its IP if the settings keep it."""
        issued = await self.start_family_issued(subject, user_agent=user_agent, client_ip=client_ip)
        return issued.pair

    async def start_family_issued(
        self,
        subject: str,
        *,
        user_agent: str | None = None,
        client_ip: str | None = None,
        jkt: str | None = None,
    ) -> IssuedPair:
        """``start_family``, with the family and expiry its answer needs; with ``jkt``, the
        tokens are bound to that DPoP key (``cnf``)."""
        family_id = secrets.token_urlsafe(FAMILY_ID_BYTES)
        now = self.clock()
        first = await self._sign(subject, family_id, authenticated_at=int(now), jkt=jkt)
        session = SessionStart(
            session_id_of(family_id),
            user_agent=user_agent[:USER_AGENT_CHARACTERS] if user_agent else None,
            client_ip=client_ip if self.settings.session_client_ip else None,
        )
        with store_step("start_family"):
            await self.store.start_family(
                family_id,
                subject,
                token_digest(first.token_id),
                token_expires_at=first.expires_at,
                now=now,
                absolute_lifetime=self.settings.absolute_lifetime,
                session=session,
                max_sessions=self.settings.max_sessions_per_subject,
            )
        # Sessions the cap ended are seen within session_check_interval, like another worker's
        # revocations: telling this process's cache would cost every login a step.
        return IssuedPair(first.pair, family_id, first.expires_at)

    async def rotate(
        self, claims: Mapping[str, Any], *, arrived_at: float | None = None
    ) -> TokenPair:
        """The successor pair for a verified refresh token (see ``rotate_issued``)."""
        return (await self.rotate_issued(claims, arrived_at=arrived_at)).pair

    async def rotate_issued(
        self, claims: Mapping[str, Any], *, arrived_at: float | None = None, jkt: str | None = None
    ) -> IssuedPair:
        """The successor pair for a verified refresh token, with the family and expiry its
        answer needs (bound to the DPoP key ``jkt`` when given); ``InvalidTokenError`` otherwise.

        The store judges the token as of ``arrived_at``, when its request arrived, so a repeat
        that arrived within the grace window is not taken for reuse because the server was
        slow to get to it. At most ``grace_seconds`` of such delay is credited: a request whose
        body trickles in never stretches the window further.
        """
        family_id = family_of(claims)
        token_id, subject = claims.get("jti"), claims.get("sub")
        if not isinstance(token_id, str) or not isinstance(subject, str):
            raise InvalidTokenError(reason="no_token_id")
        successor = await self._sign(subject, family_id, _authenticated_at(claims), jkt)
        now = self.clock()
        grace_seconds = self.settings.grace_seconds
        if arrived_at is not None:
            now = min(now, max(arrived_at, now - grace_seconds))
        # The store keeps nothing usable (stores.sealing): the grace pair opens with the
        # presented token's id only.
        sealed = seal_pair(successor.pair, token_id, family_id) if grace_seconds > 0 else NO_PAIR
        with store_step("rotate"):
            rotation = await self.store.rotate(
                family_id,
                token_digest(token_id),
                Successor(token_digest(successor.token_id), sealed, successor.expires_at),
                now=now,
                grace_seconds=grace_seconds,
                absolute_lifetime=self.settings.absolute_lifetime,
            )
        record_refresh(rotation.outcome.value)
        if rotation.outcome is RotationOutcome.ROTATED:
            return IssuedPair(successor.pair, family_id, successor.expires_at)
        if rotation.outcome is RotationOutcome.GRACE and rotation.pair is not None:
            pair = open_pair(rotation.pair, token_id, family_id)
            if pair is not None:
                return IssuedPair(_typed(pair, jkt), family_id)
        if rotation.outcome is RotationOutcome.REUSED:
            session_cache(self.store).revoked(session_id_of(family_id), rotation.subject)
            security_log.warning("refresh token reused: family revoked")
            await self._report_reuse(TokenReuseEvent(family_id, rotation.subject, now))
        else:
            security_log.info("refresh token refused by the store: %s", rotation.outcome.value)
        raise InvalidTokenError(reason=rotation.outcome.value)

    async def revoke_family(self, family_id: str) -> None:
        with store_step("revoke_family"):
            await self.store.revoke_family(family_id)
        session_cache(self.store).revoked(session_id_of(family_id))

    async def revoke_subject(self, subject: str) -> int:
        """Revoke every session of ``subject``; how many live ones it ended."""
        with store_step("revoke_subject"):
            ended = await self.store.revoke_subject(subject, now=self.clock())
        session_cache(self.store).subject_revoked(subject)
        return ended

    async def session_active(self, session_id: str, subject: str) -> bool:
        """Whether the session an access token names is live (the access guard's check)."""
        if SESSION_ID_FORMAT.fullmatch(session_id) is None:
            return False
        return await session_cache(self.store).is_active(
            self.store,
            session_id,
            subject,
            clock=self.clock,
            interval=self.settings.session_check_interval,
            stale=self.settings.session_check_stale_seconds,
        )

    async def list_sessions(
        self, subject: str, *, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        """At most ``limit`` live sessions of ``subject``, newest first, after ``after``."""
        with store_step("list_sessions"):
            return await self.store.list_sessions(
                subject, now=self.clock(), limit=limit, after=after
            )

    async def revoke_other_sessions(self, subject: str, keep: str | None) -> int:
        """Revoke every live session of ``subject`` but ``keep``; how many."""
        with store_step("revoke_other_sessions"):
            ended = await self.store.revoke_other_sessions(subject, keep, now=self.clock())
        session_cache(self.store).others_revoked(subject, keep)
        return ended

    async def revoke_session(self, subject: str, session_id: str) -> bool:
        """Revoke one live session of ``subject``; False if it is not one."""
        if SESSION_ID_FORMAT.fullmatch(session_id) is None:
            return False  # not an id a store could hold: none is asked
        with store_step("revoke_session"):
            revoked = await self.store.revoke_session(subject, session_id, now=self.clock())
        if revoked:
            session_cache(self.store).revoked(session_id, subject)
        return revoked

    async def _sign(
        self,
        subject: str,
        family_id: str,
        authenticated_at: int | None = None,
        jkt: str | None = None,
    ) -> Successor:
        access_claims: dict[str, Any] = {"sub": subject, SESSION_CLAIM: session_id_of(family_id)}
        claims: dict[str, Any] = {"sub": subject, FAMILY_CLAIM: family_id}
        if jkt is not None:
            access_claims[CONFIRMATION_CLAIM] = claims[CONFIRMATION_CLAIM] = {"jkt": jkt}
        access = await resolve(self.issuer.access_token(access_claims))
        if authenticated_at is not None:
            # No refresh token outlives its family's absolute lifetime: a client (a cookie's
            # Max-Age) never keeps one the store would refuse.
            claims[AUTH_TIME_CLAIM] = authenticated_at
            claims["exp"] = authenticated_at + int(self.settings.absolute_lifetime)
        issuer = self.issuer
        signed: Mapping[str, Any]
        if (
            isinstance(issuer, IssueTokenService)
            and type(issuer).refresh_token is IssueTokenService.refresh_token
        ):
            refresh, signed = issuer.signed_refresh_token(claims)
        else:
            # Another issue service (a subclass's override too) gives only the token: its
            # claims are read back.
            refresh = await resolve(issuer.refresh_token(claims))
            signed = unverified_claims(refresh)
        token_id, expires_at = signed.get("jti"), signed.get("exp")
        if (
            signed.get(FAMILY_CLAIM) != family_id
            or not isinstance(token_id, str)
            or not token_id
            or not isinstance(expires_at, int | float)
            or isinstance(expires_at, bool)
        ):
            raise ConfigurationError(
                "rotation needs refresh tokens that are JWTs keeping the claims they are given "
                f"('{FAMILY_CLAIM}') and adding 'jti' and 'exp'; the issue service's "
                "refresh_token() does not"
            )
        return Successor(
            token_id=token_id,
            pair=_typed({"accessToken": access, "refreshToken": refresh}, jkt),
            expires_at=float(expires_at),
        )

    async def _report_reuse(self, event: TokenReuseEvent) -> None:
        hook = self.settings.on_token_reuse
        if hook is None:
            return
        try:
            await resolve(hook(event))
        except Exception:
            # The answer is a 401 whatever the hook does; its failure must not change that.
            security_log.exception("on_token_reuse failed")


def _typed(pair: TokenPair, jkt: str | None) -> TokenPair:
    # A bound pair says so (RFC 9449 §5: token_type DPoP).
    if jkt is not None:
        pair["tokenType"] = "DPoP"
    return pair


def _authenticated_at(claims: Mapping[str, Any]) -> int | None:
    # Tokens signed before auth_time was carried have none: their successors keep without.
    value = claims.get(AUTH_TIME_CLAIM)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def family_of(claims: Mapping[str, Any]) -> str:
    """The family a verified refresh token names; ``InvalidTokenError`` if it names none."""
    family_id = claims.get(FAMILY_CLAIM)
    if not isinstance(family_id, str) or not family_id or len(family_id) > 1024:
        security_log.info("refresh token refused: no token family")
        raise InvalidTokenError(reason="no_family")
    return family_id


def refuse_unjudgeable(claims: Mapping[str, Any], *, rotation: bool) -> None:
    """``InvalidTokenError`` for a refresh token this registration cannot judge.

    Without rotation no store is asked, so a token of a family (issued under rotation, on the
    same keys) is refused: its family may have been revoked, or the token consumed. With
    rotation, ``rotate`` refuses a token without a family.
    """
    if not rotation and FAMILY_CLAIM in claims:
        security_log.info("refresh token refused: a family's token without rotation")
        raise InvalidTokenError(reason="family_without_rotation")
