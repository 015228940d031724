"""No timing oracle (issue 22): a failed login lasts as long whatever the account: an unknown
username, an argon2 hash, bcrypt hashes of a low and a high cost, a format no hasher knows.

The hashes are cheap (argon2 with 8 MiB, bcrypt costs 4 and 9) so the test is quick; their
costs still differ by 40 times, more than the issue's argon2 against bcrypt-12."""

from __future__ import annotations

import random
import statistics
import time

import bcrypt
import pytest
from fastapi import FastAPI
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from auth_refresh import AuthenticationModule, AuthLocalModule, PasswordStorageService
from conftest import InMemoryUsers, User, serve

pytestmark = [pytest.mark.anyio, pytest.mark.alone]

PASSWORD = "correct horse battery staple"
ARGON2 = Argon2Hasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
STORAGE = PasswordStorageService(PasswordHash([ARGON2, BcryptHasher()]))


def bcrypt_hash(cost: int) -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()


USERS = InMemoryUsers(
    User("argon2", "argon2@example.com", ARGON2.hash(PASSWORD)),
    User("bcrypt-4", "bcrypt-4@example.com", bcrypt_hash(4)),
    User("bcrypt-9", "bcrypt-9@example.com", bcrypt_hash(9)),
    User("unrecognised", "pbkdf2@example.com", "$pbkdf2-sha256$29000$N2bMWat1rrV2rrXWGoMwBg$Lu6y"),
)
ACCOUNTS = ["nobody", "argon2", "bcrypt-4", "bcrypt-9", "pbkdf2"]


async def test_a_failed_login_lasts_as_long_whatever_the_account() -> None:
    app = FastAPI()
    AuthLocalModule.for_root(
        user_lookup_service=USERS,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
        password_storage_service=STORAGE,
    ).attach(app)
    times: dict[str, list[float]] = {account: [] for account in ACCOUNTS}
    async with serve(app) as client:
        for round_ in range(18):
            order = random.sample(ACCOUNTS, len(ACCOUNTS))
            for account in order:
                body = {"username": f"{account}@example.com", "password": "wrong password"}
                started = time.perf_counter()
                response = await client.post("/auth/login", json=body)
                elapsed = time.perf_counter() - started
                assert response.status_code == 401
                if round_ >= 3:  # warm: every kind of hash verified a few times
                    times[account].append(elapsed)
        # The right password still logs in, at once for the cheap hash.
        for account in ("argon2", "bcrypt-4"):
            body = {"username": f"{account}@example.com", "password": PASSWORD}
            assert (await client.post("/auth/login", json=body)).status_code == 200
    medians = {account: statistics.median(seconds) for account, seconds in times.items()}
    reference = medians["nobody"]
    shown = {account: f"{seconds * 1000:.1f} ms" for account, seconds in medians.items()}
    for median in medians.values():
        assert abs(median - reference) <= 0.15 * reference, shown
