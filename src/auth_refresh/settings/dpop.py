"""The DPoP settings (RFC 9449) of a refresh registration, mixed into ``AuthRefreshSettings``.

``dpop``: ``off`` (default), ``optional`` (tokens issued with a proof are bound to its key) or
``required`` (every login, refresh, logout, session request and guarded request needs one).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, IPvAnyNetwork

from auth_refresh._utils import parse_duration

__all__ = ["DEFAULT_DPOP_ALGORITHMS", "DpopAlgorithm", "DpopMode", "DpopSettings"]

DpopMode = Literal["off", "optional", "required"]
# Asymmetric JWS algorithms only (RFC 9449 §4.2); Ed25519 is EdDSA's fully-specified name.
DpopAlgorithm = Literal[
    "ES256", "ES384", "ES512", "EdDSA", "Ed25519", "RS256", "RS384", "RS512", "PS256", "PS384",
    "PS512",
]  # fmt: skip
DEFAULT_DPOP_ALGORITHMS: tuple[DpopAlgorithm, ...] = ("ES256", "EdDSA", "Ed25519", "RS256", "PS256")


class DpopSettings(BaseModel):
    """``dpop_algorithms`` are the proof algorithms accepted; a proof's ``iat`` may be at most
    ``dpop_proof_seconds`` from the server's clock (its ``jti`` is remembered that long, in the
    store); ``dpop_nonce`` makes proofs carry a server nonce (§8). ``trusted_proxies``
    (``AUTH_REFRESH_TRUSTED_PROXIES``, shared with the login module) are the proxies whose
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` give the URL the client saw (``htu``)."""

    dpop: DpopMode = "off"
    dpop_algorithms: list[DpopAlgorithm] = Field(
        default_factory=lambda: list(DEFAULT_DPOP_ALGORITHMS), min_length=1
    )
    dpop_proof_seconds: Annotated[int, BeforeValidator(parse_duration)] = Field(
        default=60, ge=1, le=600
    )
    dpop_nonce: bool = False
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
