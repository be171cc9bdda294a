"""Draining jobs queued through RQ's own enqueue instead of lua/admit.lua (RQ's own job, to
hold admit.lua's against), and orders recorded as admit.lua records them but with no job (to
move a product's drain into any of RQ's states). Not the production path."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq import Queue
from rq.job import Job

from db.orders import AdmittedOrder
from service.core.keys import ADMITTED_KEY, pending_key
from service.sale.order_jobs import JOB_FUNCTION, _description, job_options, order_entry


def enqueue_drain(
    queue: Queue, product_id: int, job_id: str, job_timeout: int, retry_intervals: Sequence[int]
) -> Job:
    """A draining job of ``product_id`` through RQ itself, with the given id and retry waits."""
    return queue.enqueue_call(
        JOB_FUNCTION,
        args=[product_id],
        job_id=job_id,
        unique=True,
        timeout=job_timeout,
        description=_description(product_id),
        **job_options(retry_intervals),
    )


def record_orders(redis: Redis, orders: list[AdmittedOrder]) -> None:
    """Record ``orders`` as admit.lua does (pending entry, ``fs:admitted``), queueing no job."""
    with redis.pipeline(transaction=True) as pipe:
        for order in orders:
            pipe.rpush(pending_key(order.product_id), order_entry(order))
            pipe.zadd(ADMITTED_KEY, {str(order.order_id): int(order.admitted_at.timestamp() * 1000)})
        pipe.execute()
