"""What the Redis stores check of a server at their first step: that its ``maxmemory-policy``
evicts nothing, and that its data's layout is not newer than this release's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.redis_core import store_log

__all__ = ["ACCEPTED_POLICY", "check_eviction_policy", "newer_layout"]

# The one policy under which no key of a family, index or generation disappears early.
ACCEPTED_POLICY = "noeviction"


async def check_eviction_policy(
    where: str,
    config_get: Callable[[], Awaitable[Any]],
    info: Callable[[], Awaitable[Any]],
) -> None:
    """Refuse a server whose ``maxmemory-policy`` may evict keys (``ConfigurationError``): read
    with ``CONFIG GET``, or from ``INFO memory`` where ``CONFIG`` is refused (managed Redis);
    a WARNING naming the risk where neither answers."""
    policy: str | None = None
    try:
        policy = (await config_get()).get("maxmemory-policy")
    except ResponseError:
        try:
            policy = (await info()).get("maxmemory_policy")
        except ResponseError as error:
            store_log.warning(
                "%s: maxmemory-policy not readable (%s): unless it is %s, Redis may evict a "
                "subject's index or generation and let revoked sessions live on",
                where,
                error,
                ACCEPTED_POLICY,
            )
            return
    if policy is None:
        store_log.warning(
            "%s: maxmemory-policy not reported: unless it is %s, Redis may evict a subject's "
            "index or generation and let revoked sessions live on",
            where,
            ACCEPTED_POLICY,
        )
    elif policy != ACCEPTED_POLICY:
        raise ConfigurationError(
            f"the Redis store needs maxmemory-policy {ACCEPTED_POLICY}; {where}'s is {policy}, "
            "under which it may evict a subject's index or generation and let revoked "
            "sessions live on"
        )


def newer_layout(store: str, version: int, latest: int, instead: str) -> ConfigurationError:
    """The error for data of a newer layout than this release's."""
    return ConfigurationError(
        f"the {store}'s data has layout version {version}, newer than this release's "
        f"{latest}: upgrade auth-refresh, or use {instead}"
    )
