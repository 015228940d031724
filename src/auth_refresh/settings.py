"""Settings read from the environment, merged under values given in code.

``JwtSettings`` keeps the original's ``JWT_MODULE_*`` names; the refresh module's own settings
use the ``AUTH_REFRESH_`` prefix. Values passed in code win over the environment, which wins
over the defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth_refresh.exceptions import ConfigurationError

__all__ = [
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
        raise ValueError("a duration is a number of seconds or a string like '30m', '1h', '7d'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    raise ValueError("a duration is a number of seconds or a string like '30m', '1h', '7d'")


Duration = Annotated[int, BeforeValidator(parse_duration)]


class JwtSettings(BaseSettings):
    """Signing and verification of access and refresh tokens (env prefix ``JWT_MODULE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="JWT_MODULE_", extra="forbid", validate_default=True
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

    @field_validator("access_secret", "refresh_secret")
    @classmethod
    def _secret_is_long_enough(cls, secret: SecretStr | None) -> SecretStr:
        if secret is None:
            raise ValueError("is not set")
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
        if algorithm not in {"HS256", "HS384", "HS512"}:
            raise ValueError("must be one of HS256, HS384, HS512")
        return algorithm


class AuthRefreshSettings(BaseSettings):
    """The refresh module's own settings (env prefix ``AUTH_REFRESH_``).

    ``jwt_from_request`` replaces the token extractor (default: the body field ``refreshToken``);
    ``verify_token`` replaces the verification of the raw token (default: the verify service's
    ``refresh_token``). Both may be sync or async callables.
    """

    model_config = SettingsConfigDict(
        env_prefix="AUTH_REFRESH_", extra="forbid", arbitrary_types_allowed=True
    )

    jwt_from_request: Callable[..., Any] | None = None
    verify_token: Callable[[str], Any] | None = None


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
        f"{prefix}{'.'.join(str(part) for part in problem['loc']).upper()} "
        + problem["msg"].removeprefix("Value error, ")
        for problem in error.errors(include_input=False, include_url=False)
    ]
    return f"{cls.__name__}: " + "; ".join(problems)
