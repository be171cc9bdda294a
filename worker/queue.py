"""The ``orders`` queue: how the API enqueues an admitted order and how its job is named."""

from __future__ import annotations

from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from db.orders import AdmittedOrder

QUEUE_NAME = "orders"
RESULT_TTL_SECONDS = 600
"""A finished job lingers this long; the order row in PostgreSQL is the lasting record."""
FAILURE_TTL_SECONDS = 7 * 24 * 3600
"""A job that gave up stays in RQ's failed registry (the dead-letter queue) this long."""
# Infrastructure errors (PostgreSQL down) are retried for about two minutes before the
# order is rejected as failed; sold out and optimistic-lock conflicts never raise. The
# first retry is immediate, so a job abandoned by a dead worker is requeued by any worker's
# maintenance sweep without waiting for RQ's scheduler (whose lock may have died with it).
RETRY = Retry(max=7, interval=[0, 1, 2, 5, 10, 30, 60])


def order_queue(connection: Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer)


def order_job_id(order_id: str) -> str:
    """Deterministic: one job per order id, so a retry can never make a second one."""
    return f"order-{order_id}"


def job_key(order_id: str) -> str:
    return Job.key_for(order_job_id(order_id))


def job_arguments(order: AdmittedOrder) -> list:
    """JSON-safe job arguments (ids and numbers, never live objects)."""
    return [
        str(order.order_id),
        order.product_id,
        order.quantity,
        order.client_id,
        order.admitted_at.isoformat(),
    ]


def enqueue_order(queue: Queue, order: AdmittedOrder, job_timeout: int) -> Job:
    return queue.enqueue_call(
        "worker.jobs.apply_order_job",
        args=job_arguments(order),
        job_id=order_job_id(str(order.order_id)),
        description=f"order {order.order_id}",  # RQ logs this; keep client addresses out
        unique=True,
        timeout=job_timeout,
        result_ttl=RESULT_TTL_SECONDS,
        failure_ttl=FAILURE_TTL_SECONDS,
        ttl=None,  # a queued order must never expire unseen
        retry=RETRY,
        on_failure=Callback("worker.jobs.order_job_failed"),
    )
