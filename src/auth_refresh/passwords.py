"""Stored password hashes at login: the hashers that check them, and why one could not be checked.

New passwords are hashed with argon2. bcrypt hashes (from an older system) verify too when
pwdlib's bcrypt hasher is installed (``auth-refresh[bcrypt]``); after a successful login with one,
the user lookup service's ``update_password_hash(user, password_hash)``, if it has one, receives
the argon2 hash to store instead.

A user object without the password attribute, or a hash no configured hasher recognises, can
never log in; rather than a silent 401 each such cause is logged once, at WARNING, naming the
user's type or the hash's scheme, never the password or the hash.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, Any, Protocol

from pwdlib import PasswordHash
from pwdlib.exceptions import HasherNotAvailable, UnknownHashError
from pwdlib.hashers import HasherProtocol
from pwdlib.hashers.argon2 import Argon2Hasher

from auth_refresh._utils import MaybeAwaitable, attribute_of, resolve

if TYPE_CHECKING:
    from auth_refresh.local import AuthLocalModule

__all__ = ["DEFAULT_PASSWORD_ATTRIBUTE", "PasswordRehashServiceInterface"]

DEFAULT_PASSWORD_ATTRIBUTE = "password_hash"  # noqa: S105 - an attribute name

log = logging.getLogger("auth_refresh.login")

# The identifier a modular-crypt hash starts with ($argon2id$, $2b$, $pbkdf2-sha256$): never more.
_SCHEME = re.compile(r"\$([A-Za-z0-9-]{1,32})\$")
_BCRYPT_SCHEMES = {"2a", "2b", "2x", "2y"}


class PasswordRehashServiceInterface(Protocol):
    """What a user lookup service adds to have outdated hashes replaced at login."""

    def update_password_hash(self, user: Any, password_hash: str) -> MaybeAwaitable[None]: ...


def default_password_hash() -> PasswordHash:
    """argon2 hashes (and verifies); bcrypt verifies too when its hasher is installed."""
    hashers: list[HasherProtocol] = [Argon2Hasher()]
    try:
        from pwdlib.hashers.bcrypt import BcryptHasher
    except (ImportError, HasherNotAvailable):
        pass
    else:
        hashers.append(BcryptHasher())
    return PasswordHash(hashers)


class WarnOnce:
    """Logs each cause at WARNING the first time only: a misconfiguration, not every login."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()  # verification runs on worker threads

    def __call__(self, cause: tuple[str, ...], message: str, *args: object) -> None:
        with self._lock:
            if cause in self._seen:
                return
            self._seen.add(cause)
        log.warning(message, *args)


class LoginDiagnostics:
    """Reads a user's stored hash from ``password_attribute``; says once why one is missing."""

    def __init__(self, password_attribute: str = DEFAULT_PASSWORD_ATTRIBUTE) -> None:
        if not password_attribute:
            raise ValueError("password_attribute names the user's hash attribute")
        self.password_attribute = password_attribute
        self._warn = WarnOnce()

    def password_hash_of(self, user: Any) -> str | None:
        value = attribute_of(user, self.password_attribute)
        if isinstance(value, str):
            return value
        kind = type(user).__qualname__
        if value is None:
            self._warn(
                ("missing", kind),
                "login: a %s user has no %r attribute, so no password can match; name the "
                "attribute with AuthLocalModule.for_root(password_attribute=...)",
                kind,
                self.password_attribute,
            )
        else:
            self._warn(
                ("not-a-string", kind, type(value).__qualname__),
                "login: a %s user's %r is a %s, not a str, so no password can match",
                kind,
                self.password_attribute,
                type(value).__qualname__,
            )
        return None


def verify_stored_hash(
    password_hash: PasswordHash, password: str, stored_hash: str, warn: WarnOnce
) -> bool:
    """Whether ``password`` matches ``stored_hash``; says once why a hash is unrecognised."""
    try:
        return password_hash.verify(password, stored_hash)
    except UnknownHashError:
        _warn_unrecognised(stored_hash, warn)
        return False
    except Exception:  # a corrupt stored hash, or a password its hasher refuses, never matches
        return False


def needs_rehash(password_hash: PasswordHash, stored_hash: str) -> bool:
    current = password_hash.current_hasher
    return not current.identify(stored_hash) or current.check_needs_rehash(stored_hash)


def _warn_unrecognised(stored_hash: str, warn: WarnOnce) -> None:
    match = _SCHEME.match(stored_hash)
    scheme = f"${match[1]}$" if match else "(no $scheme$ prefix)"
    hint = (
        ": install auth-refresh[bcrypt] to verify bcrypt hashes (rehashed to argon2 at next login)"
        if match and match[1] in _BCRYPT_SCHEMES
        else ""
    )
    warn(
        ("unrecognised", scheme),
        "login: a stored password hash in the format %s is recognised by no configured hasher, "
        "so no password can match it%s",
        scheme,
        hint,
    )


async def rehash_if_outdated(login: AuthLocalModule, user: Any, password: str, stored: str) -> None:
    """After a login: hands an upgraded hash to ``update_password_hash``, if the service has one."""
    update = getattr(login.user_lookup_service, "update_password_hash", None)
    passwords = login.password_storage_service
    if update is None or not passwords.needs_rehash(stored):
        return
    new_hash = await login.hashing.run(passwords.hash, password)
    try:
        await resolve(update(user, new_hash))
    except Exception as error:  # the login succeeded; the old hash keeps working
        log.warning(
            "login: update_password_hash failed (%s); the old hash stays", type(error).__qualname__
        )
