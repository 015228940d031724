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
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auth_refresh._utils import (
    CANONICAL_LAST_CHARACTERS,
    HashState,
    base64url,
    base64url_decode,
)
from auth_refresh.types import TokenPair

__all__ = ["SESSION_ID_FORMAT", "open_pair", "seal_pair", "session_id_of", "token_digest"]

# A pair is sealed whole, in one AES-GCM message, into the access token's place: "sealed2."
# and base64url(nonce + ciphertext of the access token's length, 4 bytes, then both tokens).
# Each token sealed alone ("sealed1.", releases before) still opens.
SEALED_PAIR_PREFIX = "sealed2."
SEALED_PREFIX = "sealed1."
NONCE_BYTES = 12
LENGTH_BYTES = 4

# What session_id_of makes, all a session id can be (``SESSION_ID_FORMAT.fullmatch``): 32 bytes
# in unpadded base64url, 43 characters, the last holding 4 bits and two zero bits. An id a client
# sends is checked against it before any store sees it (a NUL, an overlong id reach none).
SESSION_ID_FORMAT = re.compile("[A-Za-z0-9_-]{42}[" + CANONICAL_LAST_CHARACTERS[3] + "]")


# Each label hashed once: a value costs a copy of the labelled state, not a new hash's setup.
_TOKEN_ID_LABEL: HashState = hashlib.sha256(b"auth-refresh token id\0")
_SESSION_ID_LABEL: HashState = hashlib.sha256(b"auth-refresh session id\0")
_GRACE_KEY_LABEL: HashState = hashlib.sha256(b"auth-refresh grace key\0")


def token_digest(token_id: str) -> str:
    """The id a store keeps for the token ``token_id``."""
    return base64url(_labelled(_TOKEN_ID_LABEL, token_id))


def session_id_of(family_id: str) -> str:
    """The id of the session ``family_id`` is (the access token's ``sid``): shown to its user
    and named in routes, it reveals nothing of the family id refresh tokens carry."""
    return base64url(_labelled(_SESSION_ID_LABEL, family_id))


def seal_pair(pair: TokenPair, consumed_token_id: str, family_id: str) -> TokenPair:
    """``pair``, sealed so only the holder of ``consumed_token_id`` opens it."""
    access, refresh = pair["accessToken"].encode(), pair["refreshToken"].encode()
    nonce = os.urandom(NONCE_BYTES)
    plain = len(access).to_bytes(LENGTH_BYTES, "big") + access + refresh
    sealed = AESGCM(_key(consumed_token_id)).encrypt(nonce, plain, _context(family_id, "pair"))
    return {"accessToken": SEALED_PAIR_PREFIX + base64url(nonce + sealed), "refreshToken": ""}


def open_pair(sealed: TokenPair, consumed_token_id: str, family_id: str) -> TokenPair | None:
    """The pair ``seal_pair`` sealed, or None if it was not sealed for this token and family."""
    cipher = AESGCM(_key(consumed_token_id))
    if sealed["accessToken"].startswith(SEALED_PAIR_PREFIX):
        plain = _open(
            cipher, sealed["accessToken"], SEALED_PAIR_PREFIX, _context(family_id, "pair")
        )
        if plain is None or len(plain) < LENGTH_BYTES:
            return None
        length = int.from_bytes(plain[:LENGTH_BYTES], "big")
        tokens = plain[LENGTH_BYTES:]
        access, refresh = _text(tokens[:length]), _text(tokens[length:])
    else:
        access = _text(
            _open(cipher, sealed["accessToken"], SEALED_PREFIX, _context(family_id, "access"))
        )
        refresh = _text(
            _open(cipher, sealed["refreshToken"], SEALED_PREFIX, _context(family_id, "refresh"))
        )
    if access is None or refresh is None:
        return None
    return {"accessToken": access, "refreshToken": refresh}


def _key(token_id: str) -> bytes:
    return _labelled(_GRACE_KEY_LABEL, token_id)


def _labelled(label: HashState, value: str) -> bytes:
    # SHA-256 of the label, then the value (a copied state never changes the shared one).
    state = label.copy()
    state.update(value.encode())
    return state.digest()


def _context(family_id: str, part: str) -> bytes:
    return (family_id + "\0" + part).encode()


def _open(cipher: AESGCM, sealed: str, prefix: str, context: bytes) -> bytes | None:
    if not sealed.startswith(prefix):
        return None
    try:
        data = base64url_decode(sealed.removeprefix(prefix))
        return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], context)
    except (InvalidTag, ValueError):
        return None


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None
