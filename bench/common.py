"""What every benchmark configuration shares: secrets, lifetimes and the user store."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

# 32+ bytes each: PyJWT warns on shorter HMAC keys.
ACCESS_SECRET = "bench-access-secret-0123456789abcdef-0123"
REFRESH_SECRET = "bench-refresh-secret-0123456789abcdef-012"
ACCESS_LIFETIME_SECONDS = 3600
REFRESH_LIFETIME_SECONDS = 7 * 86400
ALGORITHM = "HS256"
USER_ID = "user-1"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti"]
JTI_BYTES = 16
# RFC 6749 §5.1; every configuration sends them, so responses are the same size.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Set for the servers by python -m bench.run --unfrozen-heap.
UNFROZEN_HEAP = "BENCH_UNFROZEN_HEAP"

# The variables the library reads; the configurations set them explicitly.
LIBRARY_ENVIRONMENT_PREFIXES = ("JWT_MODULE_", "AUTH_REFRESH_")


@dataclass(frozen=True)
class BenchUser:
    id: str
    username: str


# Tokens are minted for these users in turn: a user keeps far fewer sessions than the cap on
# sessions per user (AUTH_REFRESH_MAX_SESSIONS_PER_SUBJECT), as real users do.
BENCH_USERS = 10_000


class BenchUsers:
    """The user lookup every configuration uses: users found by subject in a dict."""

    def __init__(self) -> None:
        self.users = {
            f"user-{n}": BenchUser(f"user-{n}", f"user{n}@example.com")
            for n in range(1, BENCH_USERS + 1)
        }

    def in_turn(self) -> Iterator[BenchUser]:
        """The users, one after another, round and round: whom the next token is for."""
        return itertools.cycle(self.users.values())

    def by_subject(self, subject: str) -> BenchUser | None:
        return self.users.get(subject)


def library_environment(extra: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The JWT_MODULE_* variables every library configuration runs with, plus ``extra``."""
    return {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        "JWT_MODULE_ACCESS_EXPIRES_IN": str(ACCESS_LIFETIME_SECONDS),
        "JWT_MODULE_REFRESH_EXPIRES_IN": str(REFRESH_LIFETIME_SECONDS),
        "JWT_MODULE_ALGORITHM": ALGORITHM,
        **(extra or {}),
    }


def apply_environment(values: MutableMapping[str, str]) -> None:
    """Replace this process's JWT_MODULE_* and AUTH_REFRESH_* variables with ``values``."""
    for name in list(os.environ):
        if name.startswith(LIBRARY_ENVIRONMENT_PREFIXES):
            del os.environ[name]
    os.environ.update(values)
