"""The order queue's depth for worker autoscaling, sampled in the background.

Each API pod reads the queue's length and its running jobs from Redis every
``QUEUE_SAMPLE_SECONDS`` into gauges on ``/metrics``, so a scrape never waits on Redis.
prometheus-adapter serves ``flashsale_queue_backlog`` as the External metric of the
chart's ``worker.autoscaling.mode: external``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.metrics import QUEUE_BACKLOG, QUEUE_RUNNING, QUEUE_WAITING

log = logging.getLogger(__name__)
QUEUE_SAMPLE_SECONDS = 2.0


async def sample_queue(redis: aioredis.Redis, name: str, queue_key: str, started_key: str) -> None:
    """Forever: set the gauges from the queue list and the live started-registry entries."""
    while True:
        try:
            with suppress_instrumentation():  # a sample every 2 s is not worth a trace each
                async with redis.pipeline(transaction=False) as pipe:
                    # Started entries are scored by when they expire: dead workers' do not count.
                    pipe.llen(queue_key).zcount(started_key, time.time(), "+inf")
                    waiting, running = await pipe.execute()
        except (RedisError, OSError) as exc:  # readiness reports Redis; keep the last sample
            log.debug("queue sample skipped", extra={"error": type(exc).__name__})
        else:
            QUEUE_WAITING.labels(name).set(waiting)
            QUEUE_RUNNING.labels(name).set(running)
            QUEUE_BACKLOG.labels(name).set(waiting + running)
        await asyncio.sleep(QUEUE_SAMPLE_SECONDS)
