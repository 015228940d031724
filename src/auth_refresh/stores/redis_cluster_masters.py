"""The Redis Cluster store's single-slot scripts, sent to their master through a plain client of
its own (``redis.asyncio.Redis``, one per master and event loop), with the cluster client's
connection settings (credentials, TLS, connect timeout), no read timeout and no retry.

The store has found the key's master already: a batch to it skips what the cluster client's
pipeline does again per command (the slot, the command's routing policy, a task per node) and
the timer on each reply read. The step's deadline bounds the batch, and redis-py drops the
connection of a batch cancelled at it.

The cluster client follows the layout, a plain client does not: a reply saying the slot moved
(``MOVED``, ``ASK``) has its call sent again through the cluster client, which follows it and
learns the slot's new master; a master whose plain client failed (a connection error, a
deadline) is asked ``PING`` through the cluster client too, in the background, since only its
own errors make the cluster client reconnect to a node and read the layout again (a replica
that took over a master's slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AskError, MovedError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from auth_refresh.stores.redis_batches import ScriptBatches
from auth_refresh.stores.redis_core import (
    STEP_DEADLINE_SECONDS,
    UNAVAILABLE,
    ScriptCall,
    run_script,
    store_log,
)

__all__ = ["CUT_OFF", "REDIRECTS", "Masters", "master_client"]

# A master's answers that the slot is now another's.
REDIRECTS = (MovedError, AskError)
# No answer from a master: its connection failed, or the step's deadline came first.
CUT_OFF = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
# What of the cluster client's connection settings (RedisCluster.get_connection_kwargs()) is a
# connection's setting, with every TLS option (ssl_*); the rest is the cluster client's own
# (its reply parsers, READONLY on connect, its maintenance handler, its HIMPORT registry).
SETTINGS = frozenset(
    {
        "connection_class",
        "max_connections",
        "credential_provider",
        "username",
        "password",
        "client_name",
        "driver_info",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "health_check_interval",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_read_size",
        "protocol",
        "legacy_responses",
    }
)


def master_client(cluster: RedisCluster, node: ClusterNode) -> redis.Redis:
    """A plain client of ``node`` with ``cluster``'s connection settings, no read timeout and no
    retry."""
    settings: dict[str, Any] = {
        name: value
        for name, value in cluster.get_connection_kwargs().items()
        if name in SETTINGS or name.startswith("ssl_")
    }
    pool = redis.ConnectionPool(
        **settings,
        host=node.host,
        port=node.port,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
        # Off, or the pool skips its check of a connection the server closed while idle.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    return redis.Redis.from_pool(pool)


class Masters:
    """One event loop's plain clients of the cluster's masters, by node name, each with its
    script batches."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._clients: dict[str, redis.Redis] = {}
        self._batches: dict[str, ScriptBatches] = {}
        self._pings: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def batches(self, node: ClusterNode) -> ScriptBatches:
        """``node``'s batches: the calls asked of it while one is under way go in the next."""
        batches = self._batches.get(node.name)
        if batches is None:
            client = self._clients[node.name] = master_client(self._cluster, node)
            pipeline = functools.partial(client.pipeline, transaction=False)
            single = functools.partial(run_script, client)
            batches = self._batches[node.name] = ScriptBatches(pipeline, single)
        return batches

    async def redirected(self, call: ScriptCall, deadline: float) -> Any:
        """``call``'s answer through the cluster client (its slot moved), by ``deadline``."""
        async with asyncio.timeout_at(deadline):
            return await run_script(self._cluster, call)

    def cut_off(self, node: ClusterNode) -> None:
        """``node`` did not answer its plain client: the cluster client asks it too, in the
        background (one at a time)."""
        ping = self._pings.get(node.name)
        if not self._closed and (ping is None or ping.done()):
            self._pings[node.name] = asyncio.get_running_loop().create_task(self._ping(node))

    async def _ping(self, node: ClusterNode) -> None:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS * 2):
                try:
                    await self._cluster.ping(target_nodes=node)
                except UNAVAILABLE:
                    # That error asked for a new look at the layout: now, not at the cluster
                    # client's next command (none while every step is a refresh).
                    await self._cluster.initialize()
        except UNAVAILABLE as error:
            # The next failure of its plain client asks it again.
            store_log.info("Redis Cluster: %s not asked again: %s", node.name, type(error).__name__)

    async def close(self) -> None:
        """Close every client, once the batches under way are done (their deadlines bound
        them): a batch would reconnect after its client's close."""
        self._closed = True
        for batches in self._batches.values():
            await batches.finish()
        for ping in self._pings.values():
            ping.cancel()
        if self._pings:
            await asyncio.wait(self._pings.values())
        for client in self._clients.values():
            with contextlib.suppress(RedisError, OSError):  # a socket slow to close: no error
                await client.aclose()
