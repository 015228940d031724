"""Made tests/data/schema-v1.db and schema-v1-redis.json with main's store code (before schema
versions), for the migration tests. Kept for the record; it needs that old code to run again.

    python tests/data/make_schema_v1.py redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import redis

from auth_refresh import Successor, open_store

HERE = Path(__file__).parent
NOW = 2_000_000_000.0  # 2033: the families are live whenever the tests run
LIFETIME = 30 * 86400.0


def pair(name: str) -> dict[str, str]:
    # JWT-shaped, so the at-rest scan would find them if a migration kept them in the clear.
    return {
        "accessToken": f"eyJhbGciOi.eyJ{name}access.sig",
        "refreshToken": f"eyJhbGciOi.eyJ{name}refresh.sig",
    }


async def fill(url: str) -> None:
    store = open_store(url)
    # "rotated": live token "rotated-2", consumed "rotated-1" with its grace pair.
    await store.start_family(
        "fam-rotated",
        "alice",
        "rotated-1",
        token_expires_at=NOW + 600,
        now=NOW,
        absolute_lifetime=LIFETIME,
    )
    await store.rotate(
        "fam-rotated",
        "rotated-1",
        Successor("rotated-2", pair("r2"), NOW + 600),
        now=NOW,
        grace_seconds=30,
        absolute_lifetime=LIFETIME,
    )
    # "fresh": never rotated.
    await store.start_family(
        "fam-fresh",
        "alice",
        "fresh-1",
        token_expires_at=NOW + 600,
        now=NOW,
        absolute_lifetime=LIFETIME,
    )
    # "revoked": another subject's, revoked.
    await store.start_family(
        "fam-revoked",
        "bob",
        "revoked-1",
        token_expires_at=NOW + 600,
        now=NOW,
        absolute_lifetime=LIFETIME,
    )
    await store.revoke_family("fam-revoked")
    await store.close()


def main() -> None:
    db = HERE / "schema-v1.db"
    db.unlink(missing_ok=True)
    asyncio.run(fill(f"sqlite:///{db}"))
    redis_url = sys.argv[1]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    asyncio.run(fill(redis_url))
    dump = {}
    for key in sorted(client.scan_iter("auth-refresh:*")):
        kind = client.type(key)
        value = client.hgetall(key) if kind == "hash" else sorted(client.smembers(key))
        dump[key] = {"type": kind, "value": value}
    (HERE / "schema-v1-redis.json").write_text(json.dumps(dump, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
