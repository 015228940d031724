"""What a store keeps of a token: nothing a reader of its file or keys could present.

The rotation service hands every store token ids as digests and the grace window's pair sealed
(AES-256-GCM) under a key derived from the consumed token's id, which the store only ever sees
as a digest. Only the holder of the consumed token can open the pair it was answered with, so a
repeat within the grace window still gets the same successor, and a copy of the store gets
nothing. Done here, above the stores, so third-party stores keep nothing usable either.

Digest and key come from one SHA-256 each under distinct labels: a ``jti`` carries 128 random
bits, so no stretching is needed, and neither value reveals the other.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auth_refresh._utils import base64url, base64url_decode
from auth_refresh.types import TokenPair

__all__ = ["open_pair", "seal_pair", "session_id_of", "token_digest"]

SEALED_PREFIX = "sealed1."
NONCE_BYTES = 12


def token_digest(token_id: str) -> str:
    """The id a store keeps for the token ``token_id``."""
    return base64url(hashlib.sha256(b"auth-refresh token id\0" + token_id.encode()).digest())


def session_id_of(family_id: str) -> str:
    """The id of the session ``family_id`` is (the access token's ``sid``): shown to its user
    and named in routes, it reveals nothing of the family id refresh tokens carry."""
    return base64url(hashlib.sha256(b"auth-refresh session id\0" + family_id.encode()).digest())


def seal_pair(pair: TokenPair, consumed_token_id: str, family_id: str) -> TokenPair:
    """``pair``, each token sealed so only the holder of ``consumed_token_id`` opens it."""
    cipher = AESGCM(_key(consumed_token_id))
    return {
        "accessToken": _seal(cipher, pair["accessToken"], family_id + "\0access"),
        "refreshToken": _seal(cipher, pair["refreshToken"], family_id + "\0refresh"),
    }


def open_pair(sealed: TokenPair, consumed_token_id: str, family_id: str) -> TokenPair | None:
    """The pair ``seal_pair`` sealed, or None if it was not sealed for this token and family."""
    cipher = AESGCM(_key(consumed_token_id))
    access = _open(cipher, sealed["accessToken"], family_id + "\0access")
    refresh = _open(cipher, sealed["refreshToken"], family_id + "\0refresh")
    if access is None or refresh is None:
        return None
    return {"accessToken": access, "refreshToken": refresh}


def _key(token_id: str) -> bytes:
    return hashlib.sha256(b"auth-refresh grace key\0" + token_id.encode()).digest()


def _seal(cipher: AESGCM, token: str, context: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = cipher.encrypt(nonce, token.encode(), context.encode())
    return SEALED_PREFIX + base64url(nonce + sealed)


def _open(cipher: AESGCM, sealed: str, context: str) -> str | None:
    if not sealed.startswith(SEALED_PREFIX):
        return None
    try:
        data = base64url_decode(sealed.removeprefix(SEALED_PREFIX))
        plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], context.encode())
        return plain.decode()
    except (InvalidTag, ValueError):
        return None
