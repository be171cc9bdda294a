"""The main Redis holds the queue: it must never evict keys, or admitted orders vanish."""

from __future__ import annotations

from redis import Redis
from redis import asyncio as aioredis
from redis.exceptions import RedisError


class EvictingRedis(RuntimeError):
    """The main Redis may evict keys: refuse to run on it."""


def _refuse(policy: str) -> None:
    if policy != "noeviction":
        raise EvictingRedis(
            f"the main Redis runs with maxmemory-policy {policy}: queued orders and stock gates could be "
            "evicted. Set maxmemory-policy noeviction (redis.conf, or CONFIG SET maxmemory-policy "
            "noeviction) and start again."
        )


def check_no_eviction(client: Redis) -> None:
    """Refuse a Redis that may evict; an unreachable one is left to readiness and retries."""
    try:
        policy = client.info("memory").get("maxmemory_policy", "noeviction")
    except RedisError:
        return
    _refuse(policy)


async def check_no_eviction_async(client: aioredis.Redis) -> None:
    try:
        policy = (await client.info("memory")).get("maxmemory_policy", "noeviction")
    except RedisError:
        return
    _refuse(policy)
