"""RQ's failed registry is the dead-letter queue: list what gave up, and requeue it.

An order job lands there only after every retry failed. Its failure callback has then
rejected the order as ``failed`` (and returned its units) if PostgreSQL could be reached; a
requeued job finds that row and changes nothing. When the callback could not write, the order
is still open, its units still reserved, and a requeue applies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry

from worker.queue import order_job_id, order_queue

EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: ")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    job_id: str
    order_id: str
    product_id: int
    quantity: int
    ended_at: str
    error: str
    """The last line of the exception, e.g. ``OperationalError: connection refused``."""


def _registry(redis: Redis) -> FailedJobRegistry:
    return FailedJobRegistry(queue=order_queue(redis))


def failed_orders(redis: Redis) -> list[DeadLetter]:
    queue = order_queue(redis)
    letters = []
    for job in Job.fetch_many(_registry(redis).get_job_ids(), connection=redis, serializer=queue.serializer):
        if job is None:
            continue
        order_id, product_id, quantity, *_ = job.args
        raised = [line for line in (job.exc_info or "").splitlines() if EXCEPTION_LINE.match(line)]
        ended = job.ended_at.isoformat() if job.ended_at else ""
        letters.append(
            DeadLetter(job.id, order_id, product_id, quantity, ended, raised[-1] if raised else "")
        )
    return letters


def requeue_orders(redis: Redis, order_ids: list[str] | None = None) -> int:
    """Requeue the given orders' failed jobs (all of them when ``order_ids`` is None)."""
    registry = _registry(redis)
    failed = set(registry.get_job_ids())
    wanted = failed if order_ids is None else {order_job_id(o) for o in order_ids} & failed
    for job_id in wanted:
        registry.requeue(job_id)
    return len(wanted)
