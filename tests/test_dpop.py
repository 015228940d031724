"""DPoP proofs as RFC 9449 §4.3 checks them, with proofs from panva's ``dpop`` and ``jose``
under Node (tests/dpop_client.py): each check is sent a proof that breaks it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from auth_refresh._utils import base64url_decode
from auth_refresh.exceptions import DpopNonceError, InvalidDpopProofError
from auth_refresh.tokens.dpop import (
    DpopNonces,
    DpopVerifier,
    access_token_hash,
    jwk_thumbprint,
    normalized_url,
)
from dpop_client import DpopNode, NodeKey, dpop_node

__all__ = ["dpop_node"]

HTU = "https://api.example/auth/refresh"
ALGORITHMS = ("ES256", "EdDSA", "Ed25519", "RS256", "PS256")
WINDOW = 60


def verifier(**options: Any) -> DpopVerifier:
    return DpopVerifier(options.pop("algorithms", ALGORITHMS), WINDOW, **options)


def refused(proof: str, *, method: str = "POST", url: str = HTU, **options: Any) -> str:
    """The reason ``proof`` is refused for; fails if it is accepted."""
    access_token = options.pop("access_token", None)
    with pytest.raises(InvalidDpopProofError) as caught:
        verifier(**options).verify(
            proof, method=method, url=url, now=time.time(), access_token=access_token
        )
    return caught.value.reason


def claims(**given: Any) -> dict[str, Any]:
    made = {"jti": str(uuid.uuid4()), "htm": "POST", "htu": HTU, "iat": int(time.time())}
    made.update(given)
    return {name: value for name, value in made.items() if value is not None}


def header(key: NodeKey, **given: Any) -> dict[str, Any]:
    made = {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.jwk}
    made.update(given)
    return {name: value for name, value in made.items() if value is not None}


@pytest.fixture(scope="module")
def es256(dpop_node: DpopNode) -> NodeKey:
    return dpop_node.key("ES256")


@pytest.mark.parametrize("alg", ["ES256", "Ed25519", "RS256", "PS256"])
def test_a_proof_of_the_dpop_client_is_accepted_with_its_thumbprint(
    dpop_node: DpopNode, alg: str
) -> None:
    key = dpop_node.key(alg)
    proof = dpop_node.proof(key, "POST", HTU)
    checked = verifier().verify(proof, method="POST", url=HTU, now=time.time())
    # RFC 7638, as the client computes it.
    assert checked.jkt == key.jkt == jwk_thumbprint(key.jwk)
    assert checked.jti
    assert checked.replay_key != checked.jti


def test_eddsa_is_the_same_key_under_its_older_name(dpop_node: DpopNode) -> None:
    key = dpop_node.key("Ed25519")
    proof = dpop_node.craft(key, header(key, alg="EdDSA"), claims())
    assert verifier().verify(proof, method="POST", url=HTU, now=time.time()).jkt == key.jkt
    assert refused(proof, algorithms=("ES256",)) == "algorithm"


def test_only_the_configured_algorithms_are_accepted(dpop_node: DpopNode, es256: NodeKey) -> None:
    assert refused(dpop_node.proof(es256, "POST", HTU), algorithms=("EdDSA",)) == "algorithm"
    # A symmetric proof: whoever knows the secret could make it (§4.3 step 5).
    secret = "0123456789abcdef0123456789abcdef"
    hmac_proof = dpop_node.craft(
        None, {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "AA"}}, claims(),
        secret=secret,
    )  # fmt: skip
    assert refused(hmac_proof) == "algorithm"
    with pytest.raises(ValueError, match="DPoP algorithms"):
        DpopVerifier(("HS256",), WINDOW)


def test_the_type_must_be_dpop_jwt(dpop_node: DpopNode, es256: NodeKey) -> None:
    assert refused(dpop_node.craft(es256, header(es256, typ="JWT"), claims())) == "wrong_type"
    assert refused(dpop_node.craft(es256, header(es256, typ=None), claims())) == "wrong_type"
    assert refused(dpop_node.craft(es256, header(es256, typ="at+jwt"), claims())) == "wrong_type"


def test_the_key_must_be_a_public_jwk_in_the_header(dpop_node: DpopNode, es256: NodeKey) -> None:
    assert refused(dpop_node.craft(es256, header(es256, jwk=None), claims())) == "no_key"
    private = dpop_node.craft(es256, header(es256, jwk=es256.private_jwk), claims())
    assert refused(private) == "private_key"
    # An Ed25519 key named as ES256.
    ed = dpop_node.key("Ed25519")
    assert refused(dpop_node.craft(es256, header(es256, jwk=ed.jwk), claims())) == "key_mismatch"
    broken = dict(es256.jwk, x="AAAA")
    assert refused(dpop_node.craft(es256, header(es256, jwk=broken), claims())) == "bad_key"


def test_the_signature_must_be_the_headers_keys(dpop_node: DpopNode, es256: NodeKey) -> None:
    other = dpop_node.key("ES256")
    # Signed by another key than the one it names.
    assert refused(dpop_node.craft(other, header(es256), claims())) == "bad_signature"
    proof = dpop_node.proof(es256, "POST", HTU)
    head, payload, signature = proof.split(".")
    forged = dpop_node.proof(es256, "GET", HTU).split(".")[1]
    assert refused(f"{head}.{forged}.{signature}") == "bad_signature"
    assert refused(f"{head}.{payload}.") == "malformed"
    assert refused(f"{head}.{payload}") == "malformed"
    assert refused("x" * 9000) == "malformed"
    critical = dpop_node.craft(
        es256, header(es256, crit=["ext"], ext=1), claims(), crit={"ext": True}
    )
    assert refused(critical) == "critical_header"


def test_htm_must_be_the_method(dpop_node: DpopNode, es256: NodeKey) -> None:
    assert refused(dpop_node.proof(es256, "GET", HTU)) == "htm"
    assert refused(dpop_node.proof(es256, "post", HTU)) == "htm"


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example/auth/logout",
        "http://api.example/auth/refresh",
        "https://evil.example/auth/refresh",
        "https://api.example:8443/auth/refresh",
        "https://api.example/auth/refresh/",
        "not a url",
    ],
)
def test_htu_must_be_the_url(dpop_node: DpopNode, es256: NodeKey, htu: str) -> None:
    assert refused(dpop_node.proof(es256, "POST", htu)) == "htu"


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://API.example:443/auth/refresh",
        "https://api.example/auth/./x/../refresh",
        "https://api.example/%61uth/refresh",
        "https://api.example/auth/refresh?query=ignored#and-fragment",
    ],
)
def test_htu_is_compared_normalized_without_query_and_fragment(
    dpop_node: DpopNode, es256: NodeKey, htu: str
) -> None:
    proof = dpop_node.proof(es256, "POST", htu)
    assert verifier().verify(proof, method="POST", url=HTU + "?other=1", now=time.time())


def test_normalized_urls() -> None:
    assert normalized_url("HTTP://Example.COM:80") == "http://example.com/"
    assert normalized_url("https://[::1]:443/a/%7e/%2f/b/..") == "https://[::1]/a/~/%2F/"
    assert normalized_url("https://example.com/a%2fb") == "https://example.com/a%2Fb"
    assert normalized_url("https://user@example.com/") is None
    assert normalized_url("ftp://example.com/") is None
    assert normalized_url("https://example.com:99999/") is None


def test_iat_must_be_within_the_window(dpop_node: DpopNode, es256: NodeKey) -> None:
    now = int(time.time())
    for iat in (now - WINDOW - 5, now + WINDOW + 5, "now", None):
        assert refused(dpop_node.craft(es256, header(es256), claims(iat=iat))) == "iat"
    for iat in (now - WINDOW + 5, now + WINDOW - 5):
        proof = dpop_node.craft(es256, header(es256), claims(iat=iat))
        assert verifier().verify(proof, method="POST", url=HTU, now=now).iat == iat


def test_jti_must_be_present(dpop_node: DpopNode, es256: NodeKey) -> None:
    assert refused(dpop_node.craft(es256, header(es256), claims(jti=None))) == "jti"
    assert refused(dpop_node.craft(es256, header(es256), claims(jti=""))) == "jti"
    assert refused(dpop_node.craft(es256, header(es256), claims(jti="x" * 300))) == "jti"


def test_ath_must_be_the_access_tokens_hash(dpop_node: DpopNode, es256: NodeKey) -> None:
    token = "eyJ.access.token"
    proof = dpop_node.proof(es256, "GET", HTU, access_token=token)
    assert verifier().verify(proof, method="GET", url=HTU, now=time.time(), access_token=token)
    assert refused(proof, method="GET", access_token="another.access.token") == "ath"
    without = dpop_node.proof(es256, "GET", HTU)
    assert refused(without, method="GET", access_token=token) == "ath"
    # The hash as the client computes it.
    payload = json.loads(base64url_decode(proof.split(".")[1]))
    assert payload["ath"] == access_token_hash(token)


def test_nonces_are_asked_for_then_accepted(dpop_node: DpopNode, es256: NodeKey) -> None:
    nonces = DpopNonces(b"k" * 32, seconds=300)
    checking = verifier(nonces=nonces)
    now = time.time()
    with pytest.raises(DpopNonceError) as caught:
        checking.verify(dpop_node.proof(es256, "POST", HTU), method="POST", url=HTU, now=now)
    nonce = caught.value.nonce
    assert caught.value.headers["DPoP-Nonce"] == nonce
    assert caught.value.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    proof = dpop_node.proof(es256, "POST", HTU, nonce=nonce)
    assert checking.verify(proof, method="POST", url=HTU, now=now)
    # The previous bucket's nonce still is; an older one, another key's or a made-up one not.
    assert nonces.accepts(nonce, now + 300)
    assert not nonces.accepts(nonce, now + 600)
    assert not DpopNonces(b"o" * 32).accepts(nonce, now)
    stale = dpop_node.proof(es256, "POST", HTU, nonce=nonces.current(now - 900))
    with pytest.raises(DpopNonceError):
        checking.verify(stale, method="POST", url=HTU, now=now)


def test_the_challenge_names_the_algorithms() -> None:
    error = InvalidDpopProofError(algorithms=("ES256", "EdDSA"))
    assert error.headers == {
        "WWW-Authenticate": 'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"'
    }
    assert error.status_code == 401
    assert error.error_code == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
