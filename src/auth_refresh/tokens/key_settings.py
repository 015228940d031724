"""Key rings from the JWT settings: secrets, PEM text and PEM files, each key loaded and checked
once, at startup, every error naming the setting at fault."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import SecretStr

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.settings import JwtSettings, KeySettings
from auth_refresh.tokens.keys import JwtKey, KeyRing
from auth_refresh.types import TokenType

__all__ = ["check_shared_kids", "key_rings_from_settings"]


def key_rings_from_settings(settings: JwtSettings) -> dict[TokenType, KeyRing]:
    """Both rings, loaded once; ``ConfigurationError`` names the setting at fault."""
    rings: dict[TokenType, KeyRing] = {}
    for token_type in ("access", "refresh"):
        prefix = f"JWT_MODULE_{token_type.upper()}"
        secret: SecretStr | None = getattr(settings, f"{token_type}_secret")
        configured: list[KeySettings] | None = getattr(settings, f"{token_type}_keys")
        signing_kid: str | None = getattr(settings, f"{token_type}_signing_kid")
        secret_key = None
        if secret is not None:
            try:
                secret_key = JwtKey.from_secret(secret.get_secret_value(), settings.algorithm)
            except ConfigurationError as error:
                raise ConfigurationError(f"JwtSettings: {prefix}_SECRET: {error.message}") from None
        if not configured:
            if secret_key is None:
                raise ConfigurationError(
                    f"JwtSettings: {prefix}_SECRET is not set (nor {prefix}_KEYS)"
                )
            rings[token_type] = KeyRing(secret_key)
            continue
        keys = [_load(f"{prefix}_KEYS.{index}", spec) for index, spec in enumerate(configured)]
        signing = _signing_key(prefix, keys, signing_kid)
        # The secret stays a verification key so tokens signed before the switch still work.
        extra = (secret_key,) if secret_key is not None else ()
        try:
            rings[token_type] = KeyRing(signing, (*keys, *extra))
        except ConfigurationError as error:
            raise ConfigurationError(f"JwtSettings: {prefix}_KEYS: {error.message}") from None
    check_shared_kids(rings.values())
    return rings


def check_shared_kids(rings: Iterable[KeyRing]) -> None:
    """A kid in several rings names the same key there, never a secret here and a key there."""
    seen: dict[str, JwtKey] = {}
    for ring in rings:
        for key in ring.verification:
            if key.kid is None:
                continue
            first = seen.setdefault(key.kid, key)
            if first.fingerprint() != key.fingerprint():
                raise ConfigurationError(
                    f"JwtSettings: the kid {key.kid!r} names different keys in "
                    "JWT_MODULE_ACCESS_KEYS and JWT_MODULE_REFRESH_KEYS"
                )


def _signing_key(prefix: str, keys: Sequence[JwtKey], signing_kid: str | None) -> JwtKey:
    if signing_kid is None:
        key = keys[0]
        if not key.can_sign:
            raise ConfigurationError(
                f"JwtSettings: {prefix}_SIGNING_KID is not set and the first key of "
                f"{prefix}_KEYS ({key.kid!r}) has no private key or secret to sign with"
            )
        return key
    for key in keys:
        if key.kid == signing_kid:
            if not key.can_sign:
                raise ConfigurationError(
                    f"JwtSettings: {prefix}_SIGNING_KID names {signing_kid!r}, "
                    "which has no private key or secret to sign with"
                )
            return key
    raise ConfigurationError(
        f"JwtSettings: {prefix}_SIGNING_KID names {signing_kid!r}, which is not in {prefix}_KEYS"
    )


def _load(setting: str, spec: KeySettings) -> JwtKey:
    try:
        if spec.secret is not None:
            return JwtKey.from_secret(spec.secret.get_secret_value(), spec.algorithm, spec.kid)
        if spec.private_key is not None:
            return JwtKey.from_private_pem(
                spec.private_key.get_secret_value(), spec.algorithm, spec.kid
            )
        if spec.private_key_file is not None:
            pem = _read(spec.private_key_file)
            return JwtKey.from_private_pem(pem, spec.algorithm, spec.kid)
        if spec.public_key is not None:
            return JwtKey.from_public_pem(spec.public_key, spec.algorithm, spec.kid)
        assert spec.public_key_file is not None
        return JwtKey.from_public_pem(_read(spec.public_key_file), spec.algorithm, spec.kid)
    except ConfigurationError as error:
        raise ConfigurationError(
            f"JwtSettings: {setting} (kid {spec.kid!r}): {error.message}"
        ) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror or error}") from None
