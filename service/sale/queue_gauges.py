"""Worker autoscaling's numbers on ``/metrics``, sampled in the background.

Each API pod reads, every ``QUEUE_SAMPLE_SECONDS``, the orders still undecided
(``service.sale.backlog``) and RQ's queue (its list and its running jobs) into gauges, so a
scrape never waits on Redis. prometheus-adapter serves ``flashsale_orders_undecided`` as
the External metric of the chart's ``worker.autoscaling.mode: external``.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from rq import Queue

from service.core.metrics import set_backlog_gauges, set_queue_gauges
from service.sale.backlog import read_backlog
from service.sale.order_jobs import count_queue

log = logging.getLogger(__name__)
QUEUE_SAMPLE_SECONDS = 2.0


async def sample_queue(redis: aioredis.Redis, queue: Queue) -> None:
    """Forever: set the gauges from the undecided orders, the queue list and the live
    started-registry entries."""
    while True:
        try:
            with suppress_instrumentation():  # a sample every 2 s is not worth a trace each
                backlog = await read_backlog(redis)
                async with redis.pipeline(transaction=False) as pipe:
                    count_queue(pipe, queue)
                    counts = await pipe.execute()
        except (RedisError, OSError) as exc:  # readiness reports Redis; keep the last sample
            log.debug("queue sample skipped", extra={"error": type(exc).__name__})
        else:
            set_backlog_gauges(backlog.undecided_orders, backlog.oldest_age_seconds)
            set_queue_gauges(queue.name, *counts)
        await asyncio.sleep(QUEUE_SAMPLE_SECONDS)
