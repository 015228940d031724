"""The store contract (``auth_refresh.testing``), kept by memory, SQLite (a file), Redis,
PostgreSQL and Redis Cluster (real servers) and a store written in a test, as a user would; and
which store a URL names."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from auth_refresh import ConfigurationError, RotationOutcome, Successor, open_store
from auth_refresh._utils import BUILT_IN_STORE_SCHEMES
from auth_refresh.stores.base import (
    FamilyRecord,
    RefreshTokenStore,
    Rotation,
    SessionCursor,
    SessionRecord,
    SessionStart,
    decide_rotation,
    new_family_record,
)
from auth_refresh.stores.registry import register_store_scheme, store_factory_for
from auth_refresh.testing import (
    PROOF_SCENARIOS,
    SCENARIOS,
    StoreContract,
    StoreFactory,
    check_store,
)
from store_fixtures import Family, opened

pytestmark = pytest.mark.anyio


class TestBuiltInStores(StoreContract):
    @pytest.fixture
    def store_factory(self, store_url: str) -> StoreFactory:
        return lambda: open_store(store_url)


class ToyStore:
    """A store as a user writes one in an afternoon: a dict, a lock, store.decide_rotation."""

    def __init__(self) -> None:
        self.families: dict[str, FamilyRecord] = {}
        self.lock = asyncio.Lock()

    async def start_family(
        self,
        family_id: str,
        subject: str,
        token_id: str,
        *,
        token_expires_at: float,
        now: float,
        absolute_lifetime: float,
        session: SessionStart,
        max_sessions: int,
    ) -> None:
        self.families[family_id] = new_family_record(
            subject,
            token_id,
            token_expires_at=token_expires_at,
            now=now,
            absolute_lifetime=absolute_lifetime,
            session=session,
        )
        others = [f for f, r in self.live(subject, now) if f != family_id]
        others.sort(key=lambda f: self.families[f].last_active)
        for other in others[: max(0, len(others) + 1 - max_sessions)]:
            await self.revoke_family(other)

    def live(self, subject: str, now: float) -> list[tuple[str, FamilyRecord]]:
        return [(f, r) for f, r in self.families.items() if r.subject == subject and r.is_live(now)]

    async def rotate(
        self,
        family_id: str,
        token_id: str,
        successor: Successor,
        *,
        now: float,
        grace_seconds: float,
        absolute_lifetime: float,
    ) -> Rotation:
        async with self.lock:
            rotation, record = decide_rotation(
                self.families.get(family_id),
                token_id,
                successor,
                now=now,
                grace_seconds=grace_seconds,
                absolute_lifetime=absolute_lifetime,
            )
            if record is None:
                self.families.pop(family_id, None)
            else:
                self.families[family_id] = record
            return rotation

    async def revoke_family(self, family_id: str) -> None:
        if family_id in self.families:
            self.families[family_id] = replace(
                self.families[family_id], revoked=True, successor_pair=None
            )

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        return await self.revoke_other_sessions(subject, None, now=now)

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        ended = [f for f, r in self.live(subject, now) if r.session_id != keep]
        for family_id in ended:
            await self.revoke_family(family_id)
        return len(ended)

    async def session_active(self, session_id: str, *, now: float) -> bool:
        return any(r.session_id == session_id and r.is_live(now) for r in self.families.values())

    async def list_sessions(
        self, subject: str, *, now: float, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        live = [r.session() for _, r in self.live(subject, now)]
        live.sort(key=lambda s: (s.created_at, s.session_id), reverse=True)
        return [s for s in live if after is None or after.is_before(s.created_at, s.session_id)][
            :limit
        ]

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        for family_id, record in self.families.items():
            if record.session_id == session_id and record.subject == subject:
                if not record.is_live(now):
                    return False
                await self.revoke_family(family_id)
                return True
        return False

    async def close(self) -> None:
        self.families.clear()


class TestAToyStore(StoreContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return ToyStore


class ForgetfulStore(ToyStore):
    """Broken on purpose: it never revokes a subject."""

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        return 0


async def test_the_contract_catches_a_store_that_breaks_it() -> None:
    with pytest.raises(AssertionError):
        await check_store(ForgetfulStore)
    assert len(SCENARIOS) >= 15


class ToyStoreWithProofs(ToyStore):
    """The toy store with DPoP's replay cache: each key and when it expires."""

    def __init__(self) -> None:
        super().__init__()
        self.proofs: dict[str, float] = {}

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        if self.proofs.get(key, now) > now:
            return False
        self.proofs[key] = expires_at
        return True


class TestAToyStoreWithProofs(StoreContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return ToyStoreWithProofs


class ProofForgettingStore(ToyStoreWithProofs):
    """Broken on purpose: it forgets a proof once its first second is over."""

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        return await super().first_use(key, expires_at=min(expires_at, now + 1), now=now)


async def test_the_contract_catches_a_replay_cache_that_forgets_too_soon() -> None:
    with pytest.raises(AssertionError, match="a replay"):
        await check_store(ProofForgettingStore)
    assert len(PROOF_SCENARIOS) >= 3
    # A store with the cache keeps the whole contract; one without keeps it too: DPoP is optional.
    await check_store(ToyStoreWithProofs)
    await check_store(ToyStore)


async def test_an_async_factory_gives_the_store_too() -> None:
    async def made() -> RefreshTokenStore:
        return ToyStore()

    await check_store(made)


@pytest.mark.parametrize(
    "store_url", ["sqlite", "redis", "postgres", "redis-cluster"], indirect=True
)
async def test_a_second_store_on_the_same_url_sees_the_same_families(store_url: str) -> None:
    async with opened(store_url) as first, opened(store_url) as second:
        family = await Family(first).start()
        _, _, live = await family.rotate(family.first_token)
        family.store = second
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.GRACE
        assert (await family.rotate(live.token_id))[0] is RotationOutcome.ROTATED


@pytest.mark.parametrize(
    "url",
    [
        "mysql://localhost/db",
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "memory://somewhere",
        "no scheme at all",
        "",
    ],
)
def test_unsupported_store_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url)


def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="directory does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/families.db")


def test_a_registered_scheme_opens_its_store() -> None:
    urls: list[str] = []

    def toy(url: str) -> RefreshTokenStore:
        urls.append(url)
        return ToyStore()

    register_store_scheme("toy-registered", toy)
    assert isinstance(open_store("toy-registered://anything?x=1"), ToyStore)
    assert urls == ["toy-registered://anything?x=1"]
    with pytest.raises(ConfigurationError, match="not a URL scheme"):
        register_store_scheme("bad scheme", toy)


def test_an_installed_package_names_its_scheme_by_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A distribution as pip installs one: its module and its .dist-info with the entry point.
    (tmp_path / "toy_store_package.py").write_text(
        "from auth_refresh import MemoryRefreshTokenStore\n"
        "def open_toy(url):\n"
        "    store = MemoryRefreshTokenStore()\n"
        "    store.opened_from = url\n"
        "    return store\n"
    )
    info = tmp_path / "toy_store_package-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-store-package\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[auth_refresh.stores]\ntoy-installed = toy_store_package:open_toy\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_store_package", raising=False)
    store = open_store("toy-installed://here")
    assert store.opened_from == "toy-installed://here"  # type: ignore[attr-defined]


WITHOUT_PYTEST = """
import asyncio
import subprocess
import sys

sys.modules["pytest"] = None  # as where pytest is not installed
from auth_refresh import MemoryRefreshTokenStore
from auth_refresh import testing

asyncio.run(testing.check_store(MemoryRefreshTokenStore))
print(hasattr(testing, "StoreContract"))
"""


def test_the_contract_runs_without_pytest() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST], capture_output=True, text=True, check=True
    )
    assert finished.stdout.strip() == "False"


@pytest.mark.parametrize("scheme", sorted(BUILT_IN_STORE_SCHEMES))
def test_every_scheme_the_settings_accept_has_a_store(scheme: str) -> None:
    # settings (the ground) knows the names, the registry the factories: they must agree.
    path = "/families.db" if scheme == "sqlite" else ""
    assert store_factory_for(f"{scheme}://{path}") is not None
