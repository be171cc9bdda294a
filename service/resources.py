"""Clients the API shares across requests, opened in the app's lifespan and closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from redis import Redis
from redis import asyncio as aioredis
from rq import Queue
from sqlalchemy import Engine

from db.session import make_engine
from service.lua import Scripts, load_scripts
from service.ratelimit import Limit
from service.settings import Settings
from worker.queue import order_queue

REDIS_SOCKET_TIMEOUT_SECONDS = 2.0
REDIS_POOL_SIZE = 64
"""Connections per process; a burst beyond it waits for a free one instead of failing."""
BUY_LIMIT_NAME = "buy"


class Resources:
    """A plain class, not a dataclass: Litestar must inject it as is, not try to parse it."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        limiter_redis: aioredis.Redis,
        queue: Queue,
        engine: Engine,
    ) -> None:
        self.settings = settings
        self.redis = redis
        """Main Redis: stock gate, order jobs."""
        self.scripts: Scripts = load_scripts(redis, settings.lua_dir)
        self.limiter_redis = limiter_redis
        self.limiter_scripts: Scripts = load_scripts(limiter_redis, settings.lua_dir)
        self.queue = queue
        """RQ is synchronous: enqueue in a worker thread."""
        self.engine = engine
        self.buy_limit = Limit(BUY_LIMIT_NAME, settings.rate_capacity, settings.rate_refill_per_sec)
        self.ready = True


def async_redis_client(url: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_POOL_SIZE,
        timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
    )
    return aioredis.Redis.from_pool(pool)


def open_resources(settings: Settings) -> Resources:
    """Build every client; nothing connects until first used."""
    redis = async_redis_client(settings.redis_url)
    limiter_redis = (
        redis
        if settings.limiter_redis_url == settings.redis_url
        else async_redis_client(settings.limiter_redis_url)
    )
    sync_redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
    )
    return Resources(
        settings=settings,
        redis=redis,
        limiter_redis=limiter_redis,
        queue=order_queue(sync_redis),
        engine=make_engine(settings.database_url),
    )


async def close_resources(resources: Resources) -> None:
    await resources.redis.aclose()
    if resources.limiter_redis is not resources.redis:
        await resources.limiter_redis.aclose()
    resources.queue.connection.close()
    resources.engine.dispose()


def resources_lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        resources = open_resources(settings)
        app.state.resources = resources
        try:
            yield
        finally:
            # Stop answering ready first, so a load balancer drains us before clients go.
            resources.ready = False
            await close_resources(resources)

    return lifespan


def provide_resources(state: State) -> Resources:
    return state.resources
