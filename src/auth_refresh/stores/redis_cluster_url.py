"""A Redis Cluster client from a ``redis-cluster://`` URL: its seed nodes, credentials as in
``redis://`` URLs, TLS with ``rediss-cluster://``, and the store's timeouts and retries."""

from __future__ import annotations

import urllib.parse

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.redis_core import CONNECT_TIMEOUT_SECONDS

__all__ = ["URL_SCHEMES", "cluster_client"]

URL_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}
# Longer than the standalone store's 0.5 s: redis-py's cluster client answers a read timeout by
# looking at the whole cluster again and reconnecting, which under CPU starvation caused more
# timeouts. The step deadline still bounds every step.
SOCKET_TIMEOUT_SECONDS = 1.0


def cluster_client(url: str) -> RedisCluster:
    """A new cluster client for ``url`` (``redis-cluster://host:port[,host:port...]``);
    ``ConfigurationError`` if it is not one."""
    parts = urllib.parse.urlsplit(url)
    scheme = URL_SCHEMES.get(parts.scheme)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    try:
        nodes = [_node(address) for address in hosts.split(",")]
    except ValueError:
        nodes = []
    if scheme is None or not nodes or parts.path not in ("", "/", "/0"):
        raise ConfigurationError(
            "a Redis Cluster URL is redis-cluster://host:port[,host:port...] "
            "(rediss-cluster:// with TLS), with database 0 only"
        )
    first = f"{nodes[0].host}:{nodes[0].port}"
    seed_url = urllib.parse.urlunsplit(
        (scheme, f"{userinfo}@{first}" if userinfo else first, "", parts.query, "")
    )
    try:
        return RedisCluster.from_url(
            seed_url,
            startup_nodes=nodes,
            decode_responses=True,
            # Another node's slots keep working while one primary is down.
            require_full_coverage=False,
            # A retry would double the wait on a dead node; the client may retry instead.
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
        )
    except (ValueError, RedisClusterException) as error:
        raise ConfigurationError(f"not a usable Redis Cluster URL: {error}") from None


def _node(address: str) -> ClusterNode:
    host, _, port = address.rpartition(":")
    if not host or not port:
        raise ValueError(address)
    return ClusterNode(urllib.parse.unquote(host.strip("[]")), int(port))
