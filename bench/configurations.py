"""The configurations compared, and whether each can run here.

A configuration that needs something missing (authx, a Redis server) is skipped with the
reason; nothing is stood in for it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.common import library_environment
from bench.dpop_proofs import DPOP_ENVIRONMENT

Stack = Literal["raw", "library", "authx"]
Store = Literal["memory", "sqlite", "redis", "postgres", "redis-cluster"]


@dataclass(frozen=True)
class Configuration:
    name: str
    label: str
    stack: Stack
    store: Store | None = None
    # DPoP required: each refresh token is bound to a client key and presented with a proof.
    dpop: bool = False


CONFIGURATIONS = (
    Configuration("raw", "FastAPI + PyJWT by hand (the limit)", "raw"),
    # The by-hand anchors (bench/by_hand.py): raw, each refresh token single-use in the store.
    Configuration("raw-sqlite", "FastAPI + PyJWT + sqlite3 by hand", "raw", "sqlite"),
    Configuration("raw-redis", "FastAPI + PyJWT + redis-py by hand", "raw", "redis"),
    Configuration("raw-postgres", "FastAPI + PyJWT + asyncpg by hand", "raw", "postgres"),
    Configuration(
        "raw-redis-cluster", "FastAPI + PyJWT + redis-py cluster by hand", "raw", "redis-cluster"
    ),
    Configuration("library-stateless", "auth-refresh, stateless", "library"),
    Configuration("library-memory", "auth-refresh, memory store", "library", "memory"),
    Configuration(
        "library-memory-dpop",
        "auth-refresh, memory store, each refresh with a DPoP proof (ES256)",
        "library",
        "memory",
        dpop=True,
    ),
    Configuration("library-sqlite", "auth-refresh, SQLite store", "library", "sqlite"),
    Configuration("library-redis", "auth-refresh, Redis store", "library", "redis"),
    Configuration("library-postgres", "auth-refresh, PostgreSQL store", "library", "postgres"),
    Configuration(
        "library-redis-cluster", "auth-refresh, Redis Cluster store", "library", "redis-cluster"
    ),
    Configuration("authx", "authx", "authx"),
)
# The scale-out stores' servers: these name them, or bench/scale_out.py starts them.
SERVER_URL_VARIABLES = {
    "postgres": "BENCH_POSTGRES_URL",
    "redis-cluster": "BENCH_REDIS_CLUSTER_URL",
}
BY_NAME = {configuration.name: configuration for configuration in CONFIGURATIONS}
RAW = BY_NAME["raw"]
# Each store's library configuration and its by-hand anchor.
ANCHORS = {
    f"library-{c.store}": c.name for c in CONFIGURATIONS if c.stack == "raw" and c.store is not None
}
# Each configuration whose refreshes carry a DPoP proof, and the same store's without (issue 24).
WITHOUT_PROOF = {c.name: f"library-{c.store}" for c in CONFIGURATIONS if c.dpop}


def skip_reason(
    configuration: Configuration, redis_url: str | None, redis_reason: str
) -> str | None:
    """Why ``configuration`` cannot run here, or None when it can."""
    if configuration.stack == "authx" and importlib.util.find_spec("authx") is None:
        return "authx is not installed (pip install -e '.[bench]')"
    if configuration.store == "redis":
        if importlib.util.find_spec("redis") is None:
            return "redis-py is not installed (pip install -e '.[bench]')"
        if redis_url is None:
            return redis_reason
    variable = SERVER_URL_VARIABLES.get(configuration.store or "")
    if variable is not None and not os.environ.get(variable):
        return f"{variable} is not set and no server was started"
    return None


def store_url(configuration: Configuration, workdir: Path, redis_url: str | None) -> str | None:
    """The AUTH_REFRESH_STORE_URL of a store configuration, None for the others."""
    if configuration.store == "memory":
        return "memory://"
    if configuration.store == "sqlite":
        # An absolute path after "sqlite:///": four slashes in all.
        return "sqlite:///" + str((workdir / f"{configuration.name}.db").resolve())
    if configuration.store == "redis":
        return redis_url
    if configuration.store in SERVER_URL_VARIABLES:
        return os.environ.get(SERVER_URL_VARIABLES[configuration.store])
    return None


def environment(
    configuration: Configuration, workdir: Path, redis_url: str | None
) -> dict[str, str]:
    """The JWT_MODULE_* / AUTH_REFRESH_* variables ``configuration`` runs with."""
    extra: dict[str, str] = {}
    if configuration.stack == "library":
        url = store_url(configuration, workdir, redis_url)
        # Stateless: no store is used, but the default one would leave a file behind.
        extra["AUTH_REFRESH_STORE_URL"] = url or "memory://"
        extra["AUTH_REFRESH_ROTATION"] = "true" if url is not None else "false"
        if configuration.dpop:
            extra.update(DPOP_ENVIRONMENT)
    elif configuration.store is not None:
        # A by-hand anchor: the URL its library configuration gets (a SQLite file of its own).
        extra["AUTH_REFRESH_STORE_URL"] = store_url(configuration, workdir, redis_url) or ""
    return library_environment(extra)
