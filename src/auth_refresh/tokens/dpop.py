"""DPoP proofs (RFC 9449): checking one as §4.3 says, the thumbprint of its key (RFC 7638),
the access token hash (``ath``) and stateless server nonces (§8).

Nothing here knows a request or a store: the caller gives the method and the URL the client
saw, and keeps the proof's ``jti`` (``DpopProof.replay_key``) for as long as the proof is valid.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt

from auth_refresh._utils import base64url, canonical_base64url_decode, strict_json_object
from auth_refresh.exceptions import DpopNonceError, InvalidDpopProofError

__all__ = [
    "DpopNonces",
    "DpopProof",
    "DpopVerifier",
    "access_token_hash",
    "jwk_thumbprint",
    "normalized_url",
]

PROOF_TYPE = "dpop+jwt"
# Larger than any proof with a 4096-bit RSA key; refused before any decoding.
MAX_PROOF_BYTES = 8192
MAX_JTI_LENGTH = 256
MIN_RSA_BITS = 2048
# Members of private (and symmetric) JWKs: a proof carries the public key only (§4.3 step 7).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# The key type, the curves and PyJWT's algorithm for each accepted ``alg``.
ALGORITHM_KEYS: dict[str, tuple[str, frozenset[str] | None, str]] = {
    "ES256": ("EC", frozenset({"P-256"}), "ES256"),
    "ES384": ("EC", frozenset({"P-384"}), "ES384"),
    "ES512": ("EC", frozenset({"P-521"}), "ES512"),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"}), "EdDSA"),
    "Ed25519": ("OKP", frozenset({"Ed25519"}), "EdDSA"),
    **{alg: ("RSA", None, alg) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
}
# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
# Nonces name a time bucket this long; the current and the previous bucket's are accepted.
NONCE_SECONDS = 300
NONCE_MAC_BYTES = 16

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class DpopProof:
    """A proof that passed every check: its key's thumbprint, its ``jti`` and ``iat``."""

    jkt: str
    jti: str
    iat: float

    @property
    def replay_key(self) -> str:
        """What the replay cache keeps: one fixed-size key per key and ``jti``."""
        return base64url(hashlib.sha256(f"{self.jkt}.{self.jti}".encode()).digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url (``cnf.jkt``, RFC 9449 §6)."""
    return base64url(hashlib.sha256(_canonical(jwk).encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url of the SHA-256 of the access token's ASCII (RFC 9449 §4.2)."""
    return base64url(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


# A client signs every proof with the same key, and requests go to a few URLs: both are
# prepared once. Bounded: keys and URLs an attacker makes up only push older ones out.
CACHED_KEYS = 1024
CACHED_URLS = 1024


@functools.lru_cache(maxsize=CACHED_KEYS)
def _public_key(canonical: str, pyjwt_name: str) -> tuple[jwt.PyJWK, str]:
    # ``canonical`` is the key's RFC 7638 members as JSON: all a public key is.
    key = jwt.PyJWK(json.loads(canonical), algorithm=pyjwt_name)
    return key, base64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _canonical(jwk: Mapping[str, Any]) -> str:
    members = THUMBPRINT_MEMBERS[jwk["kty"]]
    return json.dumps(
        {name: jwk[name] for name in members}, separators=(",", ":"), ensure_ascii=False
    )


@functools.lru_cache(maxsize=CACHED_URLS)
def normalized_url(url: str) -> str | None:
    """``url`` without query and fragment, normalized as RFC 3986 §6.2.2 and §6.2.3 say (case,
    percent-encoding, dot segments, default port, empty path); None if it is no http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(_normal_escape, parts.path)
    return f"{scheme}://{authority}{_remove_dot_segments(path)}"


def _normal_escape(match: re.Match[str]) -> str:
    octet = int(match.group(1), 16)
    return chr(octet) if octet in _UNRESERVED else f"%{match.group(1).upper()}"


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4, for the absolute path of a URL with an authority ("" is "/").
    segments = path.split("/")[1:] if path else [""]
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")
    return "/" + "/".join(kept)


class DpopNonces:
    """Server nonces that need no state: a time bucket and its HMAC under ``key``."""

    def __init__(self, key: bytes, seconds: int = NONCE_SECONDS) -> None:
        self._key = key
        self._seconds = seconds

    def current(self, now: float) -> str:
        """The nonce to hand out at ``now``."""
        return self._of(int(now // self._seconds))

    def accepts(self, nonce: object, now: float) -> bool:
        """Whether ``nonce`` is the current bucket's or the previous one's."""
        if not isinstance(nonce, str):
            return False
        bucket = int(now // self._seconds)
        return any(hmac.compare_digest(nonce, self._of(b)) for b in (bucket, bucket - 1))

    def _of(self, bucket: int) -> str:
        counter = bucket.to_bytes(8, "big", signed=True)
        mac = hmac.new(self._key, b"dpop-nonce" + counter, hashlib.sha256).digest()
        return base64url(counter + mac[:NONCE_MAC_BYTES])


class DpopVerifier:
    """Checks proofs (§4.3): ``algorithms`` accepted, ``window`` seconds either side of ``iat``,
    and the current nonce of ``nonces`` when given."""

    def __init__(
        self, algorithms: Sequence[str], window: float, nonces: DpopNonces | None = None
    ) -> None:
        unknown = set(algorithms) - ALGORITHM_KEYS.keys()
        if unknown or not algorithms:
            raise ValueError(f"DPoP algorithms must be some of {', '.join(ALGORITHM_KEYS)}")
        self.algorithms = tuple(algorithms)
        self.window = window
        self.nonces = nonces

    def refuse(self, reason: str, *, token_sent: bool = True) -> InvalidDpopProofError:
        """The error for a proof refused for ``reason`` (only logs and tests see it)."""
        return InvalidDpopProofError(
            algorithms=self.algorithms, reason=reason, token_sent=token_sent
        )

    def verify(
        self, proof: object, *, method: str, url: str, now: float, access_token: str | None = None
    ) -> DpopProof:
        """The checked proof; ``InvalidDpopProofError`` (or ``DpopNonceError``) otherwise.

        ``url`` is the request's as the client saw it; ``access_token`` the one presented
        with the proof, whose hash ``ath`` must be.
        """
        if not isinstance(proof, str) or not proof:
            raise self.refuse("missing", token_sent=False)
        if len(proof) > MAX_PROOF_BYTES or not proof.isascii() or proof.count(".") != 2:
            raise self.refuse("malformed")
        encoded_header, encoded_payload, encoded_signature = proof.split(".")
        header = _proof_header(encoded_header)
        if header.alg is None:
            raise self.refuse(header.refusal or "malformed")
        if header.alg not in self.algorithms:
            raise self.refuse("algorithm")
        key = header.key
        if header.refusal is not None or key is None:
            raise self.refuse(header.refusal or "bad_key")
        signature = canonical_base64url_decode(encoded_signature)
        if signature is None or not signature:
            raise self.refuse("malformed")
        if header.key_type == "RSA" and key.key.key_size < MIN_RSA_BITS:
            raise self.refuse("weak_key")
        try:
            signing_input = f"{encoded_header}.{encoded_payload}".encode("ascii")
            valid = key.Algorithm.verify(signing_input, key.key, signature)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise self.refuse("bad_key") from None
        if not valid:
            raise self.refuse("bad_signature")
        claims = _json_segment(encoded_payload)
        if claims is None:
            raise self.refuse("malformed")
        return self._checked(
            claims, header.thumbprint, method=method, url=url, now=now, token=access_token
        )

    def _checked(
        self,
        claims: Mapping[str, Any],
        thumbprint: str,
        *,
        method: str,
        url: str,
        now: float,
        token: str | None,
    ) -> DpopProof:
        jti, htm, htu, iat = (claims.get(name) for name in ("jti", "htm", "htu", "iat"))
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise self.refuse("jti")
        if htm != method:
            raise self.refuse("htm")
        expected = normalized_url(url)
        if not isinstance(htu, str) or expected is None or normalized_url(htu) != expected:
            raise self.refuse("htu")
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
            raise self.refuse("iat")
        if abs(now - iat) > self.window:
            raise self.refuse("iat")
        if token is not None and claims.get("ath") != access_token_hash(token):
            raise self.refuse("ath")
        if self.nonces is not None and not self.nonces.accepts(claims.get("nonce"), now):
            raise DpopNonceError(self.nonces.current(now), algorithms=self.algorithms)
        return DpopProof(thumbprint, jti, float(iat))


@dataclass(frozen=True)
class _ProofHeader:
    """A proof header as far as it can be checked alone. ``alg`` is None when the header is
    refused before its algorithm is known (``refusal`` says why); a known ``alg`` is then
    checked against the verifier's, and only then any ``refusal`` of its key."""

    alg: str | None
    refusal: str | None = None
    key_type: str = ""
    key: jwt.PyJWK | None = None
    thumbprint: str = ""


@functools.lru_cache(maxsize=CACHED_KEYS)
def _proof_header(encoded_header: str) -> _ProofHeader:
    # A client sends the same header (its alg and key) with every proof: checked once. Bounded
    # like the keys: at most CACHED_KEYS headers of at most MAX_PROOF_BYTES.
    header = _json_segment(encoded_header)
    if header is None:
        return _ProofHeader(None, "malformed")
    alg, jwk, typ = header.get("alg"), header.get("jwk"), header.get("typ")
    if not isinstance(typ, str) or typ.lower() != PROOF_TYPE:
        return _ProofHeader(None, "wrong_type")
    if "crit" in header:
        return _ProofHeader(None, "critical_header")
    if not isinstance(alg, str) or alg not in ALGORITHM_KEYS:
        return _ProofHeader(None, "algorithm")
    if not isinstance(jwk, dict):
        return _ProofHeader(alg, "no_key")
    if not PRIVATE_MEMBERS.isdisjoint(jwk):
        return _ProofHeader(alg, "private_key")
    key_type, curves, pyjwt_name = ALGORITHM_KEYS[alg]
    if jwk.get("kty") != key_type or (curves is not None and jwk.get("crv") not in curves):
        return _ProofHeader(alg, "key_mismatch")
    try:
        key, thumbprint = _public_key(_canonical(jwk), pyjwt_name)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return _ProofHeader(alg, "bad_key")
    return _ProofHeader(alg, None, key_type, key, thumbprint)


def _json_segment(segment: str) -> dict[str, Any] | None:
    data = canonical_base64url_decode(segment)
    return strict_json_object(data) if data is not None else None
