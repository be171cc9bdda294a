"""Every Redis client flashsale builds, built here: our timeouts, pools, retries and fixes in one place.

``tests/test_layout.py`` fails when product code builds a client anywhere else.

* ``main_redis``: the API's asyncio client of the main Redis (admission, stock gates, stats);
* ``limiter_redis``: the API's asyncio client of the buckets' Redis (may be a Redis Cluster);
* ``queue_redis``: the API's blocking client for RQ's queue and registries;
* ``worker_redis``: a worker's blocking client, whose commands outlast a Redis restart;
* ``sync_redis``: a plain blocking client of any URL (commands, job bodies, ``flashsale dev``).

The main Redis holds the queue: it must never evict keys, or admitted orders vanish
(``check_no_eviction``).
"""

from __future__ import annotations

from redis import Redis
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from service.core.settings import Settings

REDIS_SOCKET_TIMEOUT_SECONDS = 2.0
REDIS_POOL_SIZE = 64
"""Connections per API process; a burst beyond it waits for a free one instead of failing."""
NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)
"""redis-py 8.1 turns Redis Enterprise maintenance notifications on for every RESP3 pool, and
with them on its asyncio pool hands out connections the server has closed (redis-py #4252):
after a Redis restart each idle pooled connection failed one request, a 503 seconds after Redis
was back. Off, the pool replaces a closed connection at checkout, with no PING."""
WORKER_REDIS_RETRY_SECONDS = 30
"""How long a worker's Redis command keeps retrying a refused or lost connection."""
WORKER_REDIS_RETRY_INTERVAL_SECONDS = 0.5


class RedisConnection(aioredis.Connection):
    """uvloop reports a write to a connection that closed under it (Redis restarting) as a
    RuntimeError. Raised here as the ConnectionError it is, every caller (scripts,
    pipelines, pub/sub, redis-py's own retries) treats it as a lost connection: a 503, not a 500.
    """

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            raise RedisConnectionError(f"connection closed while writing: {exc}") from exc


def _async_pooled(url: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        connection_class=RedisConnection,
        max_connections=REDIS_POOL_SIZE,
        timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        maint_notifications_config=NO_MAINT_NOTIFICATIONS,
    )
    return aioredis.Redis.from_pool(pool)


def main_redis(settings: Settings) -> aioredis.Redis:
    """The main Redis for an API process: text replies, one bounded pool, 2 s timeouts."""
    return _async_pooled(settings.redis_url)


def limiter_redis(settings: Settings) -> aioredis.Redis | RedisCluster:
    """The limiter's Redis fails fast, without retries: the limiter's own timeout and
    circuit breaker decide what a failure means."""
    no_retry = AsyncRetry(NoBackoff(), 0)
    if settings.limiter_redis_cluster:
        return RedisCluster.from_url(
            settings.limiter_redis_url,
            decode_responses=True,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            retry=no_retry,
        )
    client = _async_pooled(settings.limiter_redis_url)
    client.set_retry(no_retry)
    return client


def queue_redis(settings: Settings) -> Redis:
    """The main Redis, blocking, for RQ in an API process (RQ has no asyncio client)."""
    return sync_redis(settings.redis_url, timeout=REDIS_SOCKET_TIMEOUT_SECONDS)


def worker_redis(settings: Settings) -> Redis:
    """The main Redis for a worker. RQ's loop quits on a Redis error anywhere but its blocking
    pop (a job's end, a heartbeat, maintenance), so a Redis restart would stop every busy
    worker: its commands retry a refused or lost connection instead."""
    retries = int(WORKER_REDIS_RETRY_SECONDS / WORKER_REDIS_RETRY_INTERVAL_SECONDS)
    retry = Retry(
        ConstantBackoff(WORKER_REDIS_RETRY_INTERVAL_SECONDS),
        retries,
        supported_errors=(RedisConnectionError,),
    )
    return Redis.from_url(settings.redis_url, retry=retry)


def sync_redis(url: str, timeout: float | None = None) -> Redis:
    """A blocking client of ``url``; ``timeout`` bounds connecting and each reply (None: no bound)."""
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


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
