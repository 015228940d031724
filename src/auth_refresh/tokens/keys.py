"""Key rings: the keys that sign and verify each token type, each pinned to one algorithm.

Every key is used with exactly one algorithm (RFC 8725 §3.1), so a token cannot choose how it is
checked. A ring has one signing key and any number of verification keys, told apart by ``kid``;
adding a new key and signing with it while the old one still verifies rotates keys without
logging anyone out. Keys are parsed and checked once, when the ring is built.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import Algorithm, HMACAlgorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError

from auth_refresh._utils import HashState
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.settings import (
    HMAC_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    minimum_secret_bytes,
)

__all__ = [
    "HmacSecret",
    "JwtKey",
    "KeyRing",
]

# NIST SP 800-131A and RFC 7518 §3.3: RSA keys of 2048 bits or more.
MINIMUM_RSA_BITS = 2048
# What a public JWK may carry (RFC 7518 §6): an allow-list, so private members never leak.
_PUBLIC_JWK_MEMBERS = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}

_DEFAULT_ALGORITHMS = get_default_algorithms()
_ALGORITHMS: dict[str, Algorithm] = {
    name: _DEFAULT_ALGORITHMS[name] for name in SUPPORTED_ALGORITHMS
}


_HASHES: dict[str, Callable[[bytes], HashState]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}


class HmacSecret:
    """A secret keyed for one HMAC algorithm (``HS256``, ``HS384`` or ``HS512``).

    HMAC (RFC 2104) with the key's two padded blocks hashed once, here: a message costs two
    copies of keyed hash states, an update and a final each. The same bytes as ``hmac.digest``,
    which sets up OpenSSL's HMAC for every message, at under half its CPU.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, algorithm: str, secret: bytes) -> None:
        new = _HASHES[algorithm]
        block = new(b"").block_size
        if len(secret) > block:
            secret = new(secret).digest()
        padded = secret.ljust(block, b"\0")
        # Hash states are only ever copied after this: threads share them safely.
        self._inner = new(bytes(byte ^ 0x36 for byte in padded))
        self._outer = new(bytes(byte ^ 0x5C for byte in padded))

    def mac(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this secret's MAC of ``message``, in constant time."""
        return hmac.compare_digest(self.mac(message), signature)


@dataclass(frozen=True, eq=False)
class JwtKey:
    """One key with the one algorithm it may be used with (RFC 8725 §3.1).

    For HMAC both keys are the secret's bytes; otherwise ``signing_key`` is a private key (or
    None: verification only) and ``verification_key`` the matching public key.
    """

    algorithm: str
    signing_key: Any
    verification_key: Any
    kid: str | None = None
    _jwa: Algorithm = field(init=False, repr=False)
    # HMAC keys only: the secret keyed once (None for the other algorithms).
    _hmac: HmacSecret | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                f"unsupported algorithm {self.algorithm!r}; use one of "
                + ", ".join(SUPPORTED_ALGORITHMS)
            )
        if self.kid is not None and (not isinstance(self.kid, str) or not self.kid):
            raise ConfigurationError("a kid is a non-empty string")
        if self.algorithm in HMAC_ALGORITHMS:
            _check_secret(self.algorithm, self.verification_key)
            if self.signing_key is not None and self.signing_key != self.verification_key:
                raise ConfigurationError("an HMAC key signs and verifies with the same secret")
            object.__setattr__(self, "_hmac", HmacSecret(self.algorithm, self.verification_key))
        else:
            _check_public_key(self.algorithm, self.verification_key)
            if self.signing_key is not None:
                _check_private_key(self.algorithm, self.signing_key)
                if _public_der(self.signing_key.public_key()) != _public_der(self.verification_key):
                    raise ConfigurationError("the private and public keys do not match")
        object.__setattr__(self, "_jwa", _ALGORITHMS[self.algorithm])

    @classmethod
    def from_secret(cls, secret: str | bytes, algorithm: str, kid: str | None = None) -> JwtKey:
        """An HMAC key; the secret is at least as long as the hash (RFC 7518 §3.2)."""
        secret_bytes = secret.encode() if isinstance(secret, str) else secret
        return cls(algorithm, secret_bytes, secret_bytes, kid)

    @classmethod
    def from_private_pem(cls, pem: str | bytes, algorithm: str, kid: str | None = None) -> JwtKey:
        """A key that signs (and verifies) with an unencrypted PEM private key."""
        private_key = _load_pem(pem, private=True)
        return cls(algorithm, private_key, private_key.public_key(), kid)

    @classmethod
    def from_public_pem(cls, pem: str | bytes, algorithm: str, kid: str | None = None) -> JwtKey:
        """A verification-only key from a PEM public key (``BEGIN PUBLIC KEY``)."""
        return cls(algorithm, None, _load_pem(pem, private=False), kid)

    @property
    def is_hmac(self) -> bool:
        return self.algorithm in HMAC_ALGORITHMS

    @property
    def can_sign(self) -> bool:
        return self.signing_key is not None

    def sign(self, signing_input: bytes) -> bytes:
        if self.signing_key is None:
            raise ConfigurationError(f"the key {self.kid!r} can only verify")
        if self._hmac is not None:
            # What PyJWT's HMACAlgorithm computes, from the secret keyed once.
            return self._hmac.mac(signing_input)
        signature: bytes = self._jwa.sign(signing_input, self.signing_key)
        if self.algorithm == "ES256":
            signature = _low_s(signature)
        return signature

    def verifies(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``signing_input``.

        An ECDSA signature (r, s) is also valid as (r, n - s); only the low-s one is accepted,
        so a token has one spelling.
        """
        if self._hmac is not None:
            return self._hmac.verifies(signing_input, signature)
        if self.algorithm == "ES256" and _low_s(signature) != signature:
            return False
        try:
            return bool(self._jwa.verify(signing_input, self.verification_key, signature))
        except Exception:  # any failure of the primitive means "not verified"
            return False

    def fingerprint(self) -> bytes:
        """What makes two keys the same key: the algorithm and the verification material."""
        material = self.verification_key if self.is_hmac else _public_der(self.verification_key)
        return hashlib.sha256(self.algorithm.encode() + b"\0" + material).digest()

    def public_jwk(self) -> dict[str, str] | None:
        """The public key as a JWK (RFC 7517) with ``kid``, ``alg`` and ``use``; None for HMAC."""
        if self.is_hmac:
            return None
        full = self._jwa.to_jwk(self.verification_key, as_dict=True)
        jwk = {name: str(full[name]) for name in _PUBLIC_JWK_MEMBERS[str(full["kty"])]}
        jwk.update(alg=self.algorithm, use="sig")
        if self.kid is not None:
            jwk["kid"] = self.kid
        return jwk


@dataclass(frozen=True)
class KeyRing:
    """The keys of one token type: one signs, every one of them verifies.

    ``kid`` values are unique in a ring; at most one key has no ``kid`` (the simple secret
    setup), and it matches only tokens without a ``kid``.
    """

    signing: JwtKey
    verification: tuple[JwtKey, ...] = ()

    def __post_init__(self) -> None:
        if not self.signing.can_sign:
            raise ConfigurationError(f"the signing key {self.signing.kid!r} has no private key")
        keys = tuple(self.verification)
        if not any(key is self.signing for key in keys):
            keys = (self.signing, *keys)
        kids = [key.kid for key in keys]
        duplicates = sorted({str(kid) for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise ConfigurationError(f"a kid names one key per ring: {', '.join(duplicates)}")
        object.__setattr__(self, "verification", keys)

    def find(self, kid: object) -> JwtKey | None:
        """The key a token's ``kid`` names (None: the token has none); never anything else."""
        if kid is not None and (not isinstance(kid, str) or not kid):
            return None
        for key in self.verification:
            if key.kid == kid:
                return key
        return None

    def public_jwks(self) -> list[dict[str, str]]:
        return [jwk for key in self.verification if (jwk := key.public_jwk()) is not None]


def _load_pem(pem: str | bytes, *, private: bool) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    kind = "private" if private else "public"
    try:
        if private:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_pem_public_key(data)
    except TypeError:
        raise ConfigurationError("encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        # Never quote the input: it may be a private key.
        raise ConfigurationError(f"not a PEM {kind} key") from None


def _check_secret(algorithm: str, secret: object) -> None:
    if not isinstance(secret, bytes):
        raise ConfigurationError(f"{algorithm} takes a secret, not a public or private key")
    needed = minimum_secret_bytes(algorithm)
    if len(secret) < needed:
        raise ConfigurationError(
            f"a {algorithm} secret must be at least {needed} bytes long (it is {len(secret)} bytes)"
        )
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError:
        # A public key used as a shared secret is the classic algorithm-confusion setup.
        raise ConfigurationError(
            f"{algorithm} takes a secret, and this one is a public or private key"
        ) from None


_PUBLIC_TYPES: Mapping[str, tuple[type, ...]] = {
    "RS256": (rsa.RSAPublicKey,),
    "PS256": (rsa.RSAPublicKey,),
    "ES256": (ec.EllipticCurvePublicKey,),
    "EdDSA": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
_PRIVATE_TYPES: Mapping[str, tuple[type, ...]] = {
    "RS256": (rsa.RSAPrivateKey,),
    "PS256": (rsa.RSAPrivateKey,),
    "ES256": (ec.EllipticCurvePrivateKey,),
    "EdDSA": (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey),
}
_KEY_KINDS = {"RS256": "an RSA", "PS256": "an RSA", "ES256": "a P-256", "EdDSA": "an Ed25519/Ed448"}


def _check_public_key(algorithm: str, key: object) -> None:
    if not isinstance(key, _PUBLIC_TYPES[algorithm]):
        raise ConfigurationError(f"{algorithm} needs {_KEY_KINDS[algorithm]} key")
    _check_strength(algorithm, key)


def _check_private_key(algorithm: str, key: object) -> None:
    if not isinstance(key, _PRIVATE_TYPES[algorithm]):
        raise ConfigurationError(f"{algorithm} needs {_KEY_KINDS[algorithm]} key")
    _check_strength(algorithm, key)


def _check_strength(algorithm: str, key: object) -> None:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size < MINIMUM_RSA_BITS:
        raise ConfigurationError(
            f"{algorithm} needs an RSA key of at least {MINIMUM_RSA_BITS} bits "
            f"(this one has {key.key_size})"
        )
    # RFC 7518 §3.4: ES256 is ECDSA over P-256 only.
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ConfigurationError(f"ES256 needs a P-256 key (this one is {key.curve.name})")


# The order of the P-256 group (SEC 2 §2.4.2): s and n - s sign alike.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_SCALAR_BYTES = 32


def _low_s(signature: bytes) -> bytes:
    """The spelling of a raw ES256 signature (r || s, RFC 7518 §3.4) whose s is at most n / 2."""
    if len(signature) != 2 * _P256_SCALAR_BYTES:
        return signature  # not a signature of this shape: verification refuses it
    s = int.from_bytes(signature[_P256_SCALAR_BYTES:], "big")
    if s <= _P256_ORDER // 2:
        return signature
    high = (_P256_ORDER - s) % _P256_ORDER
    return signature[:_P256_SCALAR_BYTES] + high.to_bytes(_P256_SCALAR_BYTES, "big")


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
