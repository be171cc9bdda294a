"""The clients one API process shares across requests: built once, closed once.

``service.api.lifespan`` opens them for the app; tests and benchmarks open them directly to
admit orders exactly as ``POST /buy`` does.
"""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from rq import Queue
from sqlalchemy import Engine

from db.session import make_engine
from service.core.auto_pipeline import CoalescedScript
from service.core.lua import load_scripts, script_source
from service.core.redis_clients import limiter_redis, main_redis, queue_redis
from service.core.settings import Settings
from service.limiter.ratelimit import Limiter
from service.sale.latches import NotOpenLatch, SoldOutLatch
from service.sale.order_jobs import DrainJobFields, order_queue


class Resources:
    """A plain class, not a dataclass: Litestar must inject it as is, not try to parse it."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        limiter_redis: aioredis.Redis | RedisCluster,
        queue: Queue,
        engine: Engine,
    ) -> None:
        self.settings = settings
        self.redis = redis
        """Main Redis: stock gate, pending orders, draining jobs."""
        self.admit_script = CoalescedScript(redis, script_source("admit", settings.lua_dir), name="admit")
        """lua/admit.lua; the calls of concurrent requests share pipelines."""
        self.limiter_redis = limiter_redis
        self.limiter = Limiter(load_scripts(limiter_redis, settings.lua_dir), settings, limiter_redis)
        self.queue = queue
        """The RQ queue; admit.lua writes its draining jobs."""
        self.job_fields = DrainJobFields(
            queue, settings.job_timeout_seconds, settings.job_retry_backoff_seconds
        )
        self.sold_out = SoldOutLatch()
        self.not_open = NotOpenLatch()
        self.engine = engine
        self.ready = True
        """False once the process is shutting down (readiness answers 503)."""


def open_resources(settings: Settings) -> Resources:
    """Build every client; nothing connects until first used."""
    return Resources(
        settings=settings,
        redis=main_redis(settings),
        limiter_redis=limiter_redis(settings),
        queue=order_queue(queue_redis(settings)),
        engine=make_engine(settings.database_url),
    )


async def close_resources(resources: Resources) -> None:
    await resources.redis.aclose()
    await resources.limiter_redis.aclose()
    resources.queue.connection.close()
    resources.engine.dispose()
