"""The order queue's depth for worker autoscaling, sampled in the background.

Each API pod reads the queue's length and its running jobs from Redis every
``QUEUE_SAMPLE_SECONDS`` into gauges on ``/metrics``, so a scrape never waits on Redis.
prometheus-adapter serves ``flashsale_queue_backlog`` as the External metric of the
chart's ``worker.autoscaling.mode: external``.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from rq import Queue

from service.metrics import set_queue_gauges
from worker.queue import count_queue

log = logging.getLogger(__name__)
QUEUE_SAMPLE_SECONDS = 2.0


async def sample_queue(redis: aioredis.Redis, queue: Queue) -> None:
    """Forever: set the gauges from the queue list and the live started-registry entries."""
    while True:
        try:
            with suppress_instrumentation():  # a sample every 2 s is not worth a trace each
                async with redis.pipeline(transaction=False) as pipe:
                    count_queue(pipe, queue)
                    counts = await pipe.execute()
        except (RedisError, OSError) as exc:  # readiness reports Redis; keep the last sample
            log.debug("queue sample skipped", extra={"error": type(exc).__name__})
        else:
            set_queue_gauges(queue.name, *counts)
        await asyncio.sleep(QUEUE_SAMPLE_SECONDS)
