"""Which store a URL names: the built-in schemes, registered ones, and entry points."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from auth_refresh._utils import STORE_ENTRY_POINT_GROUP, accept_store_scheme, store_scheme_of
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.stores.memory import MemoryRefreshTokenStore
from auth_refresh.stores.sqlite import SqliteRefreshTokenStore

__all__ = ["StoreFactory", "open_store", "register_store_scheme", "store_factory_for"]

StoreFactory = Callable[[str], RefreshTokenStore]


def _memory(url: str) -> RefreshTokenStore:
    if url != "memory://":
        raise ConfigurationError("the memory store's URL is memory:// and nothing more")
    return MemoryRefreshTokenStore()


def _sqlite(url: str) -> RefreshTokenStore:
    return SqliteRefreshTokenStore.from_url(url)


def _from_extra(module: str, class_name: str, names: str, extra: str) -> StoreFactory:
    """The factory of a store whose module needs the extra's package (named as the extra),
    imported on first use."""

    def factory(url: str) -> RefreshTokenStore:
        try:
            store_class = getattr(
                importlib.import_module(f"auth_refresh.stores.{module}"), class_name
            )
        except ImportError as error:
            if (error.name or "").partition(".")[0] != _EXTRA_PACKAGES[extra]:
                raise  # a fault of ours, not a missing extra
            raise ConfigurationError(
                f"AUTH_REFRESH_STORE_URL names {names}: install the extra 'auth-refresh[{extra}]'"
            ) from None
        store: RefreshTokenStore = store_class.from_url(url)
        return store

    return factory


_EXTRA_PACKAGES = {"redis": "redis", "postgres": "asyncpg"}
_redis = _from_extra("redis", "RedisRefreshTokenStore", "Redis", "redis")
_postgres = _from_extra("postgres", "PostgresRefreshTokenStore", "PostgreSQL", "postgres")
_redis_cluster = _from_extra(
    "redis_cluster", "RedisClusterRefreshTokenStore", "Redis Cluster", "redis"
)


# Each of _utils.BUILT_IN_STORE_SCHEMES.
_schemes: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
    "redis-cluster": _redis_cluster,
    "rediss-cluster": _redis_cluster,
}


def register_store_scheme(scheme: str, factory: StoreFactory) -> None:
    """Make ``open_store`` (and ``AUTH_REFRESH_STORE_URL``) open ``scheme://...`` URLs with
    ``factory(url)``. A package can instead name its factory as an entry point of the group
    ``auth_refresh.stores``, called as the scheme."""
    if not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ConfigurationError(f"not a URL scheme: {scheme!r}")
    _schemes[scheme.lower()] = factory
    accept_store_scheme(scheme.lower())


def store_factory_for(url: str) -> StoreFactory | None:
    """The factory registered for ``url``'s scheme (or named by an entry point), if any."""
    scheme = store_scheme_of(url)
    if scheme is None:
        return None
    factory = _schemes.get(scheme)
    if factory is None:
        for entry_point in entry_points(group=STORE_ENTRY_POINT_GROUP, name=scheme):
            factory = _schemes[scheme] = entry_point.load()
    return factory


def open_store(url: str) -> RefreshTokenStore:
    """The store ``url`` names: ``memory://``, ``sqlite:///path/to/file.db``,
    ``redis://host:port/db`` (``rediss://`` with TLS), ``postgresql://user:pass@host:port/db``,
    ``redis-cluster://host:port`` (``rediss-cluster://`` with TLS), or a registered scheme's."""
    factory = store_factory_for(url)
    if factory is None:
        raise ConfigurationError(
            "AUTH_REFRESH_STORE_URL must be memory://, sqlite:///path/to/file.db, "
            "redis://host:port/db (rediss:// with TLS), postgresql://user:pass@host:port/db, "
            "redis-cluster://host:port (rediss-cluster:// with TLS) or a scheme a store registered"
        )
    return factory(url)
