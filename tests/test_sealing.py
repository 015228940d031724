"""The grace window's pair at rest: sealed whole for the holder of the consumed token only, and
a pair sealed by the release before (each token alone) still opens."""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auth_refresh._utils import base64url
from auth_refresh.stores.sealing import open_pair, seal_pair, session_id_of, token_digest
from auth_refresh.types import TokenPair

PAIR: TokenPair = {"accessToken": "eyJ.access.token", "refreshToken": "eyJ.refresh.token"}


def test_a_sealed_pair_opens_for_its_token_and_family_only() -> None:
    sealed = seal_pair(PAIR, "consumed-jti", "family-1")
    assert "eyJ" not in str(sealed)
    assert open_pair(sealed, "consumed-jti", "family-1") == PAIR
    assert open_pair(sealed, "another-jti", "family-1") is None
    assert open_pair(sealed, "consumed-jti", "family-2") is None
    # Each seal is its own: a fresh nonce every time.
    assert seal_pair(PAIR, "consumed-jti", "family-1") != sealed


def test_a_pair_sealed_token_by_token_before_still_opens() -> None:
    # "sealed1.": each token in a message of its own, as the release before wrote them.
    key = hashlib.sha256(b"auth-refresh grace key\0consumed-jti").digest()

    def sealed1(token: str, part: str) -> str:
        nonce = os.urandom(12)
        data = AESGCM(key).encrypt(nonce, token.encode(), f"family-1\0{part}".encode())
        return "sealed1." + base64url(nonce + data)

    old: TokenPair = {
        "accessToken": sealed1(PAIR["accessToken"], "access"),
        "refreshToken": sealed1(PAIR["refreshToken"], "refresh"),
    }
    assert open_pair(old, "consumed-jti", "family-1") == PAIR
    assert open_pair(old, "consumed-jti", "family-2") is None


def test_the_ids_a_store_keeps_are_the_labelled_digests_of_earlier_releases() -> None:
    # Stores hold these across upgrades: a token or session id must digest as it always did.
    def digest(label: bytes, value: str) -> str:
        return base64url(hashlib.sha256(label + b"\0" + value.encode()).digest())

    for value in ("consumed-jti", "é" * 40):
        assert token_digest(value) == digest(b"auth-refresh token id", value)
        assert session_id_of(value) == digest(b"auth-refresh session id", value)
    # Computing them leaves the labels as they were.
    assert token_digest("consumed-jti") == digest(b"auth-refresh token id", "consumed-jti")
