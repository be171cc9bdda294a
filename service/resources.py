"""Clients the API shares across requests, opened in the app's lifespan and closed after it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis import Redis
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig
from rq import Queue
from sqlalchemy import Engine

from db.session import make_engine
from service.auto_pipeline import CoalescedScript
from service.dashboard import DashboardFeed, close_on_shutdown_signal
from service.lua import load_scripts, script_source
from service.queue_gauges import sample_queue
from service.queue_redis import check_no_eviction_async
from service.ratelimit import Limiter
from service.sale_stats import OUTCOME_COUNTS, flush_forever
from service.settings import Settings
from service.sold_out import SoldOutLatch, follow_gate_changes
from worker.queue import OrderJobFields, order_queue

REDIS_SOCKET_TIMEOUT_SECONDS = 2.0
REDIS_POOL_SIZE = 64
"""Connections per process; a burst beyond it waits for a free one instead of failing."""
NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)
"""redis-py 8.1 turns Redis Enterprise maintenance notifications on for every RESP3 pool, and
with them on its asyncio pool hands out connections the server has closed (redis-py #4252):
after a Redis restart each idle pooled connection failed one request, a 503 seconds after Redis
was back. Off, the pool replaces a closed connection at checkout, with no PING."""


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
        """Main Redis: stock gate, order jobs."""
        self.admit_script = CoalescedScript(redis, script_source("admit", settings.lua_dir), name="admit")
        """lua/admit.lua; the calls of concurrent requests share pipelines."""
        self.limiter_redis = limiter_redis
        self.limiter = Limiter(load_scripts(limiter_redis, settings.lua_dir), settings)
        self.queue = queue
        """The RQ queue; admit.lua writes its jobs."""
        self.job_fields = OrderJobFields(
            queue, settings.job_timeout_seconds, settings.job_retry_backoff_seconds
        )
        self.sold_out = SoldOutLatch()
        self.engine = engine
        self.ready = True
        self.dashboard = DashboardFeed(self)
        """Snapshots shared by this process's open dashboards."""


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


def async_redis_client(url: str) -> aioredis.Redis:
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


def limiter_redis_client(settings: Settings) -> aioredis.Redis | RedisCluster:
    """The limiter's Redis fails fast, without retries: the limiter's own timeout and
    circuit breaker decide what a failure means."""
    no_retry = Retry(NoBackoff(), 0)
    if settings.limiter_redis_cluster:
        return RedisCluster.from_url(
            settings.limiter_redis_url,
            decode_responses=True,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            retry=no_retry,
        )
    client = async_redis_client(settings.limiter_redis_url)
    client.set_retry(no_retry)
    return client


def open_resources(settings: Settings) -> Resources:
    """Build every client; nothing connects until first used."""
    sync_redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
    )
    return Resources(
        settings=settings,
        redis=async_redis_client(settings.redis_url),
        limiter_redis=limiter_redis_client(settings),
        queue=order_queue(sync_redis),
        engine=make_engine(settings.database_url),
    )


async def close_resources(resources: Resources) -> None:
    await resources.redis.aclose()
    await resources.limiter_redis.aclose()
    resources.queue.connection.close()
    resources.engine.dispose()


def resources_lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        resources = open_resources(settings)
        app.state.resources = resources
        queue = resources.queue
        # Start-up checks and background loops are not requests: no traces of their own (the
        # tasks inherit this context).
        with suppress_instrumentation():
            await check_no_eviction_async(resources.redis)
            tasks = [
                asyncio.create_task(follow_gate_changes(resources.redis, resources.sold_out)),
                asyncio.create_task(sample_queue(resources.redis, queue)),
                asyncio.create_task(flush_forever(resources.redis)),
            ]
        restore_signals = close_on_shutdown_signal(resources.dashboard)
        # Everything built so far lives as long as the process: out of the collector's sight,
        # so full collections under load do not walk the whole framework again and again.
        gc.freeze()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            restore_signals()
            resources.dashboard.close()
            # The last second's /buy outcomes still reach the dashboards of the other pods.
            with contextlib.suppress(RedisError, OSError):
                await OUTCOME_COUNTS.flush(resources.redis)
            # Stop answering ready first, so a load balancer drains us before clients go.
            resources.ready = False
            await close_resources(resources)

    return lifespan


def provide_resources(state: State) -> Resources:
    return state.resources
