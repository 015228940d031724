"""Settings read from the environment, merged under values given in code.

``JwtSettings`` keeps the original's ``JWT_MODULE_*`` names; the refresh module's own settings
use the ``AUTH_REFRESH_`` prefix. Values passed in code win over the environment, which wins
over the defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.keys import HMAC_ALGORITHMS, KeySettings, minimum_secret_bytes

__all__ = [
    "DEFAULT_STORE_URL",
    "AuthRefreshSettings",
    "Duration",
    "JwtSettings",
    "build_settings",
    "parse_duration",
]

MINIMUM_SECRET_BYTES = 32

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31557600}
_DURATION = re.compile(r"\s*(\d+)\s*([smhdwy]?)\s*")


def parse_duration(value: object) -> int:
    """Seconds from a number or a string: ``"30"``, ``"30s"``, ``"30m"``, ``"1h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a string like '30m', '1h', '7d'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    raise ValueError("must be a number of seconds or a string like '30m', '1h', '7d'")


Duration = Annotated[int, BeforeValidator(parse_duration)]


class JwtSettings(BaseSettings):
    """Signing and verification of access and refresh tokens (env prefix ``JWT_MODULE_``).

    Each token type needs ``*_SECRET`` (an HMAC secret used with ``ALGORITHM``) or ``*_KEYS`` (a
    JSON list of ``KeySettings``: several keys with a ``kid`` and an algorithm each; the one
    ``*_SIGNING_KID`` names, or else the first, signs). With both, the keys sign and the secret
    still verifies tokens without a ``kid``, so moving from a secret to keys logs nobody out.
    """

    model_config = SettingsConfigDict(
        env_prefix="JWT_MODULE_", extra="forbid", validate_default=True, hide_input_in_errors=True
    )

    access_secret: SecretStr | None = None
    refresh_secret: SecretStr | None = None
    access_expires_in: Duration = Field(default=3600, gt=0)
    refresh_expires_in: Duration = Field(default=7 * 86400, gt=0)
    algorithm: str = "HS256"
    issuer: str | None = None
    audience: str | None = None
    leeway: Duration = Field(default=5, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    access_keys: list[KeySettings] | None = None
    refresh_keys: list[KeySettings] | None = None
    access_signing_kid: str | None = None
    refresh_signing_kid: str | None = None

    @field_validator("access_secret", "refresh_secret")
    @classmethod
    def _secret_is_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        length = len(secret.get_secret_value().encode())
        if length < MINIMUM_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MINIMUM_SECRET_BYTES} bytes long (it is {length} bytes)"
            )
        return secret

    @field_validator("algorithm")
    @classmethod
    def _algorithm_is_hmac(cls, algorithm: str) -> str:
        # Secrets are shared keys: only the HMAC family can use them.
        if algorithm not in HMAC_ALGORITHMS:
            raise ValueError("must be one of HS256, HS384, HS512")
        return algorithm

    @model_validator(mode="after")
    def _each_token_type_has_keys(self) -> JwtSettings:
        for token_type in ("access", "refresh"):
            name = f"JWT_MODULE_{token_type.upper()}"
            secret: SecretStr | None = getattr(self, f"{token_type}_secret")
            keys: list[KeySettings] | None = getattr(self, f"{token_type}_keys")
            signing_kid: str | None = getattr(self, f"{token_type}_signing_kid")
            if secret is None and not keys:
                raise ValueError(f"{name}_SECRET is not set (nor {name}_KEYS)")
            if secret is not None:
                length = len(secret.get_secret_value().encode())
                needed = minimum_secret_bytes(self.algorithm)
                if length < needed:
                    # RFC 7518 §3.2: at least as long as the hash output.
                    raise ValueError(
                        f"{name}_SECRET must be at least {needed} bytes long for "
                        f"{self.algorithm} (it is {length} bytes)"
                    )
            kids = [key.kid for key in keys or ()]
            duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
            if duplicates:
                raise ValueError(f"{name}_KEYS names a kid twice: {', '.join(duplicates)}")
            if signing_kid is not None and signing_kid not in kids:
                raise ValueError(f"{name}_SIGNING_KID names {signing_kid!r}, not in {name}_KEYS")
        return self


DEFAULT_STORE_URL = "sqlite:///auth-refresh.db"
STORE_URL_SCHEMES = (
    "memory://",
    "sqlite:///",
    "redis://",
    "rediss://",
    "postgresql://",
    "postgres://",
    "redis-cluster://",
    "rediss-cluster://",
)


class AuthRefreshSettings(BaseSettings):
    """The refresh module's own settings (env prefix ``AUTH_REFRESH_``).

    ``jwt_from_request`` replaces the token extractor (default: the body field ``refreshToken``);
    ``verify_token`` replaces the verification of the raw token (default: the verify service's
    ``refresh_token``). Both may be sync or async callables.

    ``rotation`` (default on) makes every refresh token single-use within its token family, kept
    in the store ``store_url`` names (``memory://``, ``sqlite:///path/to/file.db``,
    ``redis://host:port/db``). ``grace_seconds`` is how long a repeat of the token just consumed
    gets the same successor pair (0 turns it off); ``absolute_lifetime`` caps a family's age.
    ``on_token_reuse`` (sync or async) is called with a ``TokenReuseEvent`` when a consumed token
    comes back and its family is revoked.

    ``cookie_transport`` puts the refresh token in an ``HttpOnly`` cookie named ``cookie_name``
    (``Secure`` unless ``cookie_secure`` is false, for plain-http localhost development only;
    ``SameSite`` from ``cookie_same_site``); requests whose token came from the cookie need the
    CSRF header. ``cookie_body_refresh_token`` keeps ``refreshToken`` in the body as well.
    """

    model_config = SettingsConfigDict(
        env_prefix="AUTH_REFRESH_",
        extra="forbid",
        arbitrary_types_allowed=True,
        hide_input_in_errors=True,
    )

    jwt_from_request: Callable[..., Any] | None = None
    verify_token: Callable[[str], Any] | None = None
    rotation: bool = True
    grace_seconds: Duration = Field(default=5, ge=0)
    absolute_lifetime: Duration = Field(default=30 * 86400, gt=0)
    store_url: str = DEFAULT_STORE_URL
    on_token_reuse: Callable[..., Any] | None = None
    cookie_transport: bool = False
    cookie_name: str = Field(default="refresh_token", pattern=r"^[A-Za-z0-9_.-]+$")
    cookie_secure: bool = True
    cookie_same_site: Literal["strict", "lax", "none"] = "strict"
    cookie_body_refresh_token: bool = False

    @field_validator("store_url")
    @classmethod
    def _store_url_is_supported(cls, url: str) -> str:
        if not url.startswith(STORE_URL_SCHEMES):
            raise ValueError(
                "must start with memory://, sqlite:/// (then a file path), redis://, rediss://, "
                "postgresql://, postgres://, redis-cluster:// or rediss-cluster://"
            )
        return url

    @model_validator(mode="after")
    def _same_site_none_needs_secure(self) -> AuthRefreshSettings:
        # Browsers drop SameSite=None cookies that are not Secure.
        if self.cookie_same_site == "none" and not self.cookie_secure:
            raise ValueError("AUTH_REFRESH_COOKIE_SAME_SITE=none needs AUTH_REFRESH_COOKIE_SECURE")
        return self


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def build_settings(
    cls: type[SettingsT], given: SettingsT | Mapping[str, Any] | None = None
) -> SettingsT:
    """``cls`` from env and defaults with ``given`` merged over them; errors name the env var."""
    if isinstance(given, cls):
        return given
    try:
        return cls(**dict(given or {}))
    except ValidationError as error:
        raise ConfigurationError(_describe(cls, error)) from None


def _describe(cls: type[BaseSettings], error: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    # Only the location and the message: the input may be a secret.
    problems = [
        # A check across fields has no location: its message names the settings itself.
        (
            f"{prefix}{'.'.join(str(part) for part in problem['loc']).upper()} "
            if problem["loc"]
            else ""
        )
        + problem["msg"].removeprefix("Value error, ")
        for problem in error.errors(include_input=False, include_url=False)
    ]
    return f"{cls.__name__}: " + "; ".join(problems)
