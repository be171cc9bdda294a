"""Draining jobs queued through RQ's own enqueue instead of lua/admit.lua (RQ's own job, to
hold admit.lua's against), and orders recorded as admit.lua records them but with no job (to
move a product's drain into any of RQ's states). Not the production path."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq import Queue
from rq.job import Job

from db.orders import AdmittedOrder
from service.core.keys import ADMITTED_KEY, drain_of_job, pending_key
from service.sale.order_jobs import JOB_FUNCTION, _description, drain_args, job_options, order_entry


def enqueue_drain(queue: Queue, job_id: str, job_timeout: int, retry_intervals: Sequence[int]) -> Job:
    """The draining job ``job_id`` (of the product and lane it names) through RQ itself, with
    the given retry waits."""
    product_id, lane = drain_of_job(job_id)
    return queue.enqueue_call(
        JOB_FUNCTION,
        args=drain_args(product_id, lane),
        job_id=job_id,
        unique=True,
        timeout=job_timeout,
        description=_description(product_id, lane),
        **job_options(retry_intervals),
    )


def record_orders(redis: Redis, orders: list[AdmittedOrder], lane: int = 0) -> None:
    """Record ``orders`` in ``lane`` as admit.lua does (pending entry, ``fs:admitted``),
    queueing no job."""
    with redis.pipeline(transaction=True) as pipe:
        for order in orders:
            pipe.rpush(pending_key(order.product_id, lane), order_entry(order))
            pipe.zadd(ADMITTED_KEY, {str(order.order_id): int(order.admitted_at.timestamp() * 1000)})
        pipe.execute()
