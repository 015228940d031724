"""Stored password hashes at login: the hashers that check them, and why one could not be checked.

New passwords are hashed with argon2. bcrypt hashes (from an older system) verify too when
pwdlib's bcrypt hasher is installed (``auth-refresh[bcrypt]``); after a successful login with one,
the user lookup service's ``update_password_hash(user, password_hash)``, if it has one, receives
the argon2 hash to store instead.

A user object without the password attribute, or a hash no configured hasher recognises, can
never log in; rather than a silent 401 each such cause is logged once, at WARNING, naming the
user's type or the hash's scheme, never the password or the hash.

At most ``HashingLimit.limit`` hashes run at once in the process, and a failed login costs
the same whatever the account (``FailureFloor``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import cached_property
from typing import Any, Protocol, TypeVar

from pwdlib import PasswordHash
from pwdlib.exceptions import HasherNotAvailable, UnknownHashError
from pwdlib.hashers import HasherProtocol
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.concurrency import run_in_threadpool

from auth_refresh._utils import MaybeAwaitable, attribute_of, resolve
from auth_refresh.exceptions import AuthLocalBusyError

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


class PasswordStorageService:
    """Hashes and verifies passwords with pwdlib (argon2; bcrypt verifies too if installed)."""

    def __init__(self, password_hash: PasswordHash | None = None) -> None:
        self._password_hash = password_hash or default_password_hash()
        self._warn = WarnOnce()

    def hash(self, password: str) -> str:
        return self._password_hash.hash(password)

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether ``password`` matches; a missing, unrecognised or corrupt hash costs a
        verification with the current hasher, as an unknown user does."""
        matched = None if password_hash is None else self._verify_stored(password, password_hash)
        if matched is not None:
            return matched
        # The work of a wrong password, so timing does not tell which accounts exist.
        self._password_hash.verify(password, self._unknown_user_hash)
        return False

    def _verify_stored(self, password: str, stored_hash: str) -> bool | None:
        """Whether ``password`` matches ``stored_hash``; None when no hasher could tell."""
        try:
            return self._password_hash.verify(password, stored_hash)
        except UnknownHashError:
            _warn_unrecognised(stored_hash, self._warn)
            return None
        except Exception:  # a corrupt stored hash, or a password its hasher refuses
            return None

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a hash that matched is outdated: another hasher's, or older parameters."""
        return needs_rehash(self._password_hash, password_hash)

    @cached_property
    def _unknown_user_hash(self) -> str:
        return self._password_hash.hash(secrets.token_urlsafe(32))


async def rehash_if_outdated(
    lookup: object,
    passwords: PasswordStorageService,
    hashing: HashingLimit,
    user: Any,
    password: str,
    stored: str,
) -> None:
    """After a login: hands an upgraded hash to ``lookup.update_password_hash``, if it has one."""
    update = getattr(lookup, "update_password_hash", None)
    if update is None or not passwords.needs_rehash(stored):
        return
    new_hash = await hashing.run(passwords.hash, password)
    try:
        await resolve(update(user, new_hash))
    except Exception as error:  # the login succeeded; the old hash keeps working
        log.warning(
            "login: update_password_hash failed (%s); the old hash stays", type(error).__qualname__
        )


# A cap on concurrent password hashing, so login memory has a bound.
#
# Argon2 takes its memory cost (64 MiB by default) per hash, for unknown users as well (against
# username enumeration), and the thread pool runs 40 at once: unbounded, a burst of bad logins
# takes gigabytes. ``HashingLimit`` lets at most ``limit`` hashes run in the process; the others
# wait their turn for a short, bounded time and are then refused with a 503 and ``Retry-After``.

T = TypeVar("T")


def default_hash_concurrency() -> int:
    """The CPUs this process may run on: more hashes at once only queue for a core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


class HashingLimit:
    """At most ``limit`` hashes at once; a caller waits at most ``wait_seconds`` for a turn.

    Turns are handed over in arrival order. The count is shared by every event loop and
    thread of the process, as the memory is.
    """

    def __init__(self, limit: int, wait_seconds: float) -> None:
        if limit < 1 or wait_seconds <= 0:
            raise ValueError("a hashing limit needs limit >= 1 and wait_seconds > 0")
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._running = 0
        # Each waiting caller's turn and its event loop, in arrival order.
        self._waiting: OrderedDict[asyncio.Future[None], asyncio.AbstractEventLoop] = OrderedDict()

    @property
    def running(self) -> int:
        """How many hashes hold a turn now."""
        return self._running

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in the thread pool once a turn is free; ``AuthLocalBusyError``
        when none is within ``wait_seconds``."""
        await self._acquire()
        try:
            # Not abandoned if the request is cancelled: the turn ends when the hash does.
            return await run_in_threadpool(function, *args)
        finally:
            self._release()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._running < self.limit and not self._waiting:
                self._running += 1
                return
            turn: asyncio.Future[None] = loop.create_future()
            self._waiting[turn] = loop
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_seconds)
        except BaseException as error:  # the wait timed out, or the request was cancelled
            with self._lock:
                handed_over = self._waiting.pop(turn, None) is None
            if handed_over:
                # A release gave this caller the turn as it gave up: pass it on.
                self._release()
            if isinstance(error, TimeoutError):
                raise AuthLocalBusyError() from None
            raise

    def _release(self) -> None:
        with self._lock:
            while self._waiting:
                turn, loop = self._waiting.popitem(last=False)
                try:
                    # The turn passes to the next caller: the running count stays.
                    loop.call_soon_threadsafe(start_turn, turn)
                    return
                except RuntimeError:  # that caller's event loop is closed: it waits no more
                    continue
            self._running -= 1


def start_turn(future: asyncio.Future[None]) -> None:
    """Wakes the caller a turn was handed to (on its own event loop)."""
    if not future.done():
        future.set_result(None)


# The cost of a failed login, whatever the account.
#
# Unknown users and unrecognised or corrupt hashes verify against a dummy hash of the current
# hasher, known users against their own hash, whose cost is its hasher's and its parameters':
# bcrypt-12 takes about twice the default argon2, bcrypt-4 next to nothing. So a failed login
# lasts at least as long as the slowest kind of stored hash seen takes to verify (by median of
# its last few verifications, successful ones too): it waits out the difference after its
# hashing turn, on the event loop, which costs neither a turn nor a thread.

# A modular-crypt hash's scheme and parameters, which its cost depends on; never its salt.
_COST_PREFIX = re.compile(
    r"\$[A-Za-z0-9-]{1,32}(?:\$(?:\d{1,7}|[a-z]{1,8}=\d{1,10}(?:,[a-z]{1,8}=\d{1,10})*))*\$"
)


def cost_kind(stored_hash: str | None) -> str:
    """What verifying ``stored_hash`` costs depends on: ``$2b$12$``, ``$argon2id$v=19$m=...$``;
    ``""`` for no hash or one without a ``$scheme$``."""
    match = _COST_PREFIX.match(stored_hash or "")
    return match[0] if match else ""


def timed(function: Callable[..., T], *args: object) -> tuple[T, float]:
    """``function(*args)`` and the seconds it took."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


class FailureFloor:
    """How long a failed login lasts at least: the median verification time of the slowest
    kind of hash seen, over its last ``samples`` verifications."""

    def __init__(self, samples: int = 9, max_kinds: int = 32) -> None:
        self._samples = samples
        self._max_kinds = max_kinds
        self._times: OrderedDict[str, deque[float]] = OrderedDict()
        self._medians: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        with self._lock:
            return max(self._medians.values(), default=0.0)

    def record(self, kind: str, seconds: float) -> None:
        """One verification of a ``kind`` hash (``cost_kind``) took ``seconds``."""
        with self._lock:
            times = self._times.get(kind)
            if times is None:
                if len(self._times) >= self._max_kinds:  # the kind seen least lately leaves
                    oldest, _ = self._times.popitem(last=False)
                    del self._medians[oldest]
                times = self._times[kind] = deque(maxlen=self._samples)
            self._times.move_to_end(kind)
            times.append(seconds)
            self._medians[kind] = statistics.median(times)
