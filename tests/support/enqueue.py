"""Orders queued through RQ's own enqueue instead of lua/admit.lua: RQ's own job, to hold
admit.lua's against, and jobs to move into any of RQ's states. Not the production path: the
order skips the product's pending list, so no batch ever claims it."""

from __future__ import annotations

from collections.abc import Sequence

from rq import Queue
from rq.job import Job

from db.orders import AdmittedOrder
from service.core.keys import ADMITTED_KEY, order_job_id
from service.core.settings import DEFAULT_JOB_RETRY_BACKOFF_SECONDS
from service.core.tracing import trace_carrier
from service.sale.order_jobs import JOB_FUNCTION, _description, job_arguments, job_options


def enqueue_order(
    queue: Queue,
    order: AdmittedOrder,
    job_timeout: int,
    retry_backoff: Sequence[int] = DEFAULT_JOB_RETRY_BACKOFF_SECONDS,
) -> Job:
    """Enqueue through RQ itself, and record the order in ``fs:admitted`` as admit.lua does: a
    job whose order is not there was decided already, and its worker skips it."""
    admitted_ms = int(order.admitted_at.timestamp() * 1000)
    queue.connection.zadd(ADMITTED_KEY, {order_job_id(str(order.order_id)): admitted_ms})
    return queue.enqueue_call(
        JOB_FUNCTION,
        args=job_arguments(order),
        meta=trace_carrier() or None,
        job_id=order_job_id(str(order.order_id)),
        unique=True,
        timeout=job_timeout,
        description=_description(order),
        **job_options(retry_backoff),
    )
