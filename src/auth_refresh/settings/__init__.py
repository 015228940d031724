"""Settings read from the environment and a ``.env`` file, merged under values given in code.

``JwtSettings`` keeps the original's ``JWT_MODULE_*`` names; the refresh module's own settings
use the ``AUTH_REFRESH_`` prefix. Values passed in code win over the environment, which wins
over ``.env`` in the working directory, which wins over the defaults. Variables that are no
setting (another library's, in a shared ``.env``) are ignored; a name given in code that is no
setting is a typo, refused. A mistake is a ``ConfigurationError`` that names a value given in
code as it was written (``grace_seconds``), one from the environment by its variable
(``AUTH_REFRESH_GRACE_SECONDS``), and one an enclosing ``BaseSettings`` read by the variable
the user set (``APP_JWT__ACCESS_SECRET``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth_refresh._utils import is_store_scheme, origin_of, parse_duration, store_scheme_of
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.settings.dpop import DpopSettings
from auth_refresh.settings.naming import describe, refuse_unknown

__all__ = [
    "DEFAULT_STORE_URL",
    "HMAC_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "TRUSTED_PROXIES_VARIABLE",
    "AuthLocalSettings",
    "AuthRefreshSettings",
    "DpopSettings",
    "Duration",
    "JwtSettings",
    "KeySettings",
    "SigningAlgorithm",
    "TrustedProxies",
    "build_settings",
    "minimum_secret_bytes",
    "parse_duration",
]

MINIMUM_SECRET_BYTES = 32

SigningAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA"]

SUPPORTED_ALGORITHMS: tuple[str, ...] = get_args(SigningAlgorithm)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


def minimum_secret_bytes(algorithm: str) -> int:
    """RFC 7518 §3.2: an HMAC key is at least as long as the hash output."""
    return {"HS256": 32, "HS384": 48, "HS512": 64}[algorithm]


class KeySettings(BaseModel):
    """One configured key: its ``kid``, its algorithm and exactly one source of key material.

    HMAC algorithms take a ``secret``; the others a PEM private key (the ring can then sign with
    it) or a PEM public key (verification only), inline or from a file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kid: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    algorithm: SigningAlgorithm
    secret: SecretStr | None = None
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    public_key: str | None = None
    public_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_source_of_the_algorithms_kind(self) -> KeySettings:
        given = [name for name in _MATERIAL_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"kid {self.kid!r}: give exactly one of {', '.join(_MATERIAL_FIELDS)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        # One kid never names both a shared secret and a public key (RFC 8725 §3.1).
        if self.algorithm in HMAC_ALGORITHMS and given != ["secret"]:
            raise ValueError(
                f"kid {self.kid!r}: {self.algorithm} is an HMAC algorithm and takes a 'secret', "
                "not a public or private key"
            )
        if self.algorithm not in HMAC_ALGORITHMS and given == ["secret"]:
            raise ValueError(
                f"kid {self.kid!r}: {self.algorithm} takes a private or public key, not a 'secret'"
            )
        return self


_MATERIAL_FIELDS = ("secret", "private_key", "private_key_file", "public_key", "public_key_file")


Duration = Annotated[int, BeforeValidator(parse_duration)]


class _Settings(BaseSettings):
    """Settings whose validation errors are ``ConfigurationError``s pointing at their source."""

    # Whether a value given in code is named as written (else by its environment variable).
    names_fields_given_in_code: ClassVar[bool] = True

    def __init__(self, **values: Any) -> None:
        # The environment and .env may hold anyone's variables (extra="ignore"); a name given
        # in code is meant for these settings, so one that is none is a typo.
        unknown = refuse_unknown(type(self), values)
        if unknown is not None:
            raise ConfigurationError(unknown)
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigurationError(describe(type(self), error, values)) from None


class JwtSettings(_Settings):
    """Signing and verification of access and refresh tokens (env prefix ``JWT_MODULE_``).

    Each token type needs ``*_SECRET`` (an HMAC secret used with ``ALGORITHM``) or ``*_KEYS`` (a
    JSON list of ``KeySettings``: several keys with a ``kid`` and an algorithm each; the one
    ``*_SIGNING_KID`` names, or else the first, signs). With both, the keys sign and the secret
    still verifies tokens without a ``kid``, so moving from a secret to keys logs nobody out.
    """

    model_config = SettingsConfigDict(
        env_prefix="JWT_MODULE_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
    )
    # Its key checks name JWT_MODULE_* variables in their messages: the fields' names follow.
    names_fields_given_in_code: ClassVar[bool] = False

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


class AuthRefreshSettings(_Settings, DpopSettings):
    """The refresh module's own settings (env prefix ``AUTH_REFRESH_``).

    ``jwt_from_request`` replaces the token extractor (default: the body field ``refreshToken``);
    ``verify_token`` replaces the verification of the raw token (default: the verify service's
    ``refresh_token``). Both may be sync or async callables.

    ``rotation`` (default on) makes every refresh token single-use within its token family, kept
    in the store ``store_url`` names (``memory://``, ``sqlite:///path/to/file.db``,
    ``redis://host:port/db``, or a scheme registered with ``register_store_scheme``).
    ``grace_seconds`` is how long a repeat of the token just consumed gets the same successor
    pair (0 turns it off); ``absolute_lifetime`` caps a family's age.
    ``on_token_reuse`` (sync or async) is called with a ``TokenReuseEvent`` when a consumed token
    comes back and its family is revoked.

    With rotation each family is a session its access tokens name (``sid``): the access guard
    refuses them once it is revoked, seen by every worker within ``session_check_interval``
    seconds (at most one store read per session per interval and process). While the store
    cannot answer, a session it said was live is trusted for ``session_check_stale_seconds``
    after that answer (0: refused at once, 503).
    ``session_client_ip`` keeps each session's client IP for ``list_sessions`` (off by
    default); its ``User-Agent`` is kept, cut to 256 characters. ``max_sessions_per_subject``
    caps a user's live sessions: a login beyond it ends the least recently refreshed one.

    ``cookie_transport`` puts the refresh token in an ``HttpOnly`` cookie named ``cookie_name``
    (``Secure`` unless ``cookie_secure`` is false, for plain-http localhost development only;
    ``SameSite`` from ``cookie_same_site``); requests whose token came from the cookie need the
    CSRF header. ``cookie_body_refresh_token`` keeps ``refreshToken`` in the body as well.
    ``cookie_prefix`` (``__Secure-``, ``__Host-``) prefixes both cookies' names so browsers refuse
    them from http or, ``__Host-``, other hosts; ``__Host-`` puts the refresh cookie on ``/``.
    ``allowed_origins`` are the origins whose pages may log in, refresh and log out with cookie
    transport (default: the request's own); ``csrf_secret`` keys the CSRF token (default: a
    key derived from the refresh signing key). The ``dpop*`` settings: ``DpopSettings``.
    """

    model_config = SettingsConfigDict(
        env_prefix="AUTH_REFRESH_",
        env_file=".env",
        extra="ignore",
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
    session_check_interval: float = Field(default=1.0, ge=0, le=60)
    session_check_stale_seconds: float = Field(default=30.0, ge=0, le=3600)
    session_client_ip: bool = False
    max_sessions_per_subject: int = Field(default=100, ge=1, le=1000)
    cookie_transport: bool = False
    cookie_name: str = Field(default="refresh_token", pattern=r"^[A-Za-z0-9_.-]+$")
    cookie_secure: bool = True
    cookie_same_site: Literal["strict", "lax", "none"] = "strict"
    cookie_body_refresh_token: bool = False
    cookie_prefix: Literal["", "__Secure-", "__Host-"] = ""
    # Cookie transport's origin check (None: the request's own) and CSRF key (None: derived
    # from the refresh signing key).
    allowed_origins: list[str] | None = None
    csrf_secret: SecretStr | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str] | None) -> list[str] | None:
        if origins is None:
            return None
        normal = []
        for given in origins:
            origin = origin_of(given)
            parts = urlsplit(given.strip())
            # Only an origin: a path or query would never match what browsers send.
            if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(
                    "each entry is an origin, scheme://host[:port], like https://app.example"
                )
            normal.append(origin)
        return normal

    @field_validator("csrf_secret")
    @classmethod
    def _csrf_secret_is_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value().encode()) < MINIMUM_SECRET_BYTES:
            raise ValueError(f"must be at least {MINIMUM_SECRET_BYTES} bytes long")
        return secret

    @field_validator("store_url")
    @classmethod
    def _store_url_is_supported(cls, url: str) -> str:
        scheme = store_scheme_of(url)
        if scheme is None or not is_store_scheme(scheme):
            raise ValueError(
                "must start with memory://, sqlite:/// (then a file path), redis://, rediss://, "
                "postgresql://, postgres://, redis-cluster://, rediss-cluster:// "
                "or a scheme a store registered (register_store_scheme)"
            )
        return url

    @model_validator(mode="after")
    def _cookies_browsers_keep(self) -> AuthRefreshSettings:
        # Browsers drop SameSite=None cookies and prefixed ones that are not Secure.
        if self.cookie_same_site == "none" and not self.cookie_secure:
            raise ValueError("AUTH_REFRESH_COOKIE_SAME_SITE=none needs AUTH_REFRESH_COOKIE_SECURE")
        if self.cookie_prefix and not self.cookie_secure:
            needs = f"AUTH_REFRESH_COOKIE_PREFIX={self.cookie_prefix} needs"
            raise ValueError(f"{needs} AUTH_REFRESH_COOKIE_SECURE")
        return self


# The proxies whose X-Forwarded-For names the client: one variable for every module that reads
# it, whichever prefix its other settings have.
TRUSTED_PROXIES_VARIABLE = "AUTH_REFRESH_TRUSTED_PROXIES"
TrustedProxies = list[IPvAnyNetwork]


class AuthLocalSettings(_Settings):
    """The login module's settings (env prefix ``AUTH_LOCAL_``).

    ``max_concurrent_hashes`` caps the password hashes running at once in the process (default:
    the CPUs it may use), which bounds login memory at that many times the hasher's memory
    cost; a login waits at most ``hash_wait_seconds`` for a turn, then gets a 503.

    ``max_logins_per_client`` and ``max_logins_per_username`` cap the logins in progress from
    one client address (default: half of ``max_concurrent_hashes``, at least 1) and for one
    username (default: one more than per client); one more waits up to ``hash_wait_seconds``
    for a place, then gets a 429. ``trusted_proxies`` (addresses or networks; the variable
    ``AUTH_REFRESH_TRUSTED_PROXIES``, shared with the other modules) are the proxies whose
    ``X-Forwarded-For`` names the client; by default none is trusted.
    """

    model_config = SettingsConfigDict(
        env_prefix="AUTH_LOCAL_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        validate_by_name=True,
    )

    max_concurrent_hashes: int | None = Field(default=None, ge=1, le=1024)
    hash_wait_seconds: float = Field(default=2.0, gt=0, le=60)
    max_logins_per_client: int | None = Field(default=None, ge=1, le=1024)
    max_logins_per_username: int | None = Field(default=None, ge=1, le=1024)
    trusted_proxies: TrustedProxies = Field(
        default_factory=list, validation_alias=TRUSTED_PROXIES_VARIABLE
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def build_settings(
    cls: type[SettingsT], given: SettingsT | Mapping[str, Any] | None = None
) -> SettingsT:
    """``cls`` from env and defaults with ``given`` merged over them (``ConfigurationError``)."""
    if isinstance(given, cls):
        return given
    if given is not None and not isinstance(given, Mapping):
        raise ConfigurationError(
            f"settings must be a {cls.__name__} or a mapping of its fields, "
            f"not {type(given).__name__}"
        )
    try:
        return cls(**dict(given or {}))
    except ValidationError as error:  # a BaseSettings that is not one of ours
        raise ConfigurationError(describe(cls, error, dict(given or {}))) from None
