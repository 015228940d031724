"""Made tests/data/schema-v1-redis-cluster.json with the Redis Cluster store of layout 1 (the
code before commit dc82d8d), for the migration tests. Kept for the record; it needs that old
code on the path to run again:

    git archive dc82d8d^ src | tar -x -C /tmp/layout-1
    PYTHONPATH=/tmp/layout-1/src:tests python tests/data/make_schema_v1_cluster.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from redis.cluster import ClusterNode, RedisCluster

from auth_refresh import Successor, open_store
from auth_refresh.stores.base import SessionStart
from auth_refresh.stores.sealing import seal_pair, session_id_of, token_digest
from redis_cluster import cluster_url, running_cluster

HERE = Path(__file__).parent
NOW = 2_000_000_000.0  # 2033: the families are live whenever the tests run
LIFETIME = 30 * 86400.0
PAIR = {
    "accessToken": "eyJhbGciOi.eyJr2access.sig",
    "refreshToken": "eyJhbGciOi.eyJr2refresh.sig",
}


def session(family_id: str) -> SessionStart:
    return SessionStart(session_id_of(family_id), user_agent="first-schema-agent")


async def fill(url: str) -> None:
    store = open_store(url)
    options = {"token_expires_at": NOW + 600, "now": NOW, "absolute_lifetime": LIFETIME}
    # "rotated": live token "rotated-2", consumed "rotated-1" with its grace pair.
    await store.start_family(
        "fam-rotated", "alice", token_digest("rotated-1"), session=session("fam-rotated"), **options
    )
    await store.rotate(
        "fam-rotated",
        token_digest("rotated-1"),
        Successor(
            token_digest("rotated-2"), seal_pair(PAIR, "rotated-1", "fam-rotated"), NOW + 600
        ),
        now=NOW,
        grace_seconds=30,
        absolute_lifetime=LIFETIME,
    )
    # "fresh": never rotated.
    await store.start_family(
        "fam-fresh", "alice", token_digest("fresh-1"), session=session("fam-fresh"), **options
    )
    # "revoked": alice's too, logged out.
    await store.start_family(
        "fam-revoked", "alice", token_digest("revoked-1"), session=session("fam-revoked"), **options
    )
    await store.revoke_family("fam-revoked")
    await store.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir, running_cluster(Path(workdir)) as nodes:
        url = cluster_url(nodes)
        asyncio.run(fill(url))
        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", nodes[0].port)], decode_responses=True
        )
        dump = {}
        for key in sorted(client.scan_iter("auth-refresh:*", target_nodes=RedisCluster.PRIMARIES)):
            kind = client.type(key)
            if kind == "hash":
                value: object = client.hgetall(key)
            elif kind == "set":
                value = sorted(client.smembers(key))
            else:
                value = client.get(key)
            dump[key] = {"type": kind, "value": value}
        client.close()
    path = HERE / "schema-v1-redis-cluster.json"
    path.write_text(json.dumps(dump, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
