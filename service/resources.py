"""Clients the API shares across requests, opened in the app's lifespan and closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

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
BUY_LIMIT_NAME = "buy"


@dataclass
class Resources:
    settings: Settings
    redis: aioredis.Redis
    """Main Redis: stock gate, order jobs."""
    scripts: Scripts
    limiter_redis: aioredis.Redis
    limiter_scripts: Scripts
    queue: Queue
    """RQ is synchronous: enqueue in a worker thread."""
    engine: Engine
    buy_limit: Limit
    ready: bool = field(default=True)


def _async_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
    )


def open_resources(settings: Settings) -> Resources:
    """Build every client; nothing connects until first used."""
    redis = _async_redis(settings.redis_url)
    limiter_redis = (
        redis if settings.limiter_redis_url == settings.redis_url else _async_redis(settings.limiter_redis_url)
    )
    sync_redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
    )
    return Resources(
        settings=settings,
        redis=redis,
        scripts=load_scripts(redis, settings.lua_dir),
        limiter_redis=limiter_redis,
        limiter_scripts=load_scripts(limiter_redis, settings.lua_dir),
        queue=order_queue(sync_redis),
        engine=make_engine(settings.database_url),
        buy_limit=Limit(BUY_LIMIT_NAME, settings.rate_capacity, settings.rate_refill_per_sec),
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
