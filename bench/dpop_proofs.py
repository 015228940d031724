"""DPoP proofs for the benchmark's client: an ES256 key made with ``cryptography`` and proofs
signed by PyJWT, all made before any timing (RFC 9449 §4.2: a new ``jti`` for each request).

Proofs are fresh when made; the registration they are sent to accepts ``iat`` up to
``PROOF_SECONDS`` away, longer than the in-process phase runs and than any HTTP run waits
after its proofs are made (the check costs the same either way).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from auth_refresh.tokens.dpop import jwk_thumbprint

# The most AUTH_REFRESH_DPOP_PROOF_SECONDS allows.
PROOF_SECONDS = 600
DPOP_ENVIRONMENT = {
    "AUTH_REFRESH_DPOP": "required",
    "AUTH_REFRESH_DPOP_PROOF_SECONDS": str(PROOF_SECONDS),
}


class ProofMaker:
    """One client's key pair, and proofs of it for given requests."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.header = {"typ": "dpop+jwt", "jwk": jwk}
        # RFC 7638: what tokens bound to this key carry as ``cnf.jkt``.
        self.thumbprint = jwk_thumbprint(jwk)

    def proof(self, method: str, url: str) -> bytes:
        """A proof for ``method`` and ``url``, made now, ready for a header."""
        claims = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers=self.header).encode()
