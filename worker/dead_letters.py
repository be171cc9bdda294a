"""RQ's failed registry is the dead-letter queue: order jobs that failed every retry while
their order is still undecided.

An order job lands there after its last retry failed, and its failure callback has by then
either decided the order (its row says ``rejected``/``failed`` and its units are back in the
gate: PostgreSQL answered) or, when PostgreSQL could not take the rejection, left it
undecided: still in ``fs:admitted``, ``queued`` to its buyer, its units held. Only the
undecided are dead letters. The stranded-order sweep runs them again once PostgreSQL answers
(taking them out of the registry as it queues them) and drops the entries of decided orders,
so the registry, ``flashsale orders failed`` and the sweep agree; ``flashsale orders requeue``
runs them at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis import Redis
from rq.exceptions import InvalidJobOperation
from rq.job import Job
from rq.registry import FailedJobRegistry

from service.core.keys import ADMITTED_KEY, order_job_id
from service.sale.order_jobs import order_queue

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


def failed_registry(redis: Redis) -> FailedJobRegistry:
    return FailedJobRegistry(queue=order_queue(redis))


def _split(redis: Redis) -> tuple[list[str], list[str]]:
    """The failed registry's job ids: (orders still undecided, orders decided)."""
    job_ids = failed_registry(redis).get_job_ids(cleanup=False)
    if not job_ids:
        return [], []
    undecided, decided = [], []
    for job_id, admitted_at in zip(job_ids, redis.zmscore(ADMITTED_KEY, job_ids), strict=True):
        (decided if admitted_at is None else undecided).append(job_id)
    return undecided, decided


def dead_letter_ids(redis: Redis) -> list[str]:
    return _split(redis)[0]


def failed_orders(redis: Redis) -> list[DeadLetter]:
    queue = order_queue(redis)
    letters = []
    for job in Job.fetch_many(dead_letter_ids(redis), connection=redis, serializer=queue.serializer):
        if job is None:
            continue
        order_id, product_id, quantity, *_ = job.args
        result = job.latest_result()  # the failure RQ recorded (job.exc_info is deprecated)
        trace = result.exc_string if result is not None else ""
        raised = [line for line in (trace or "").splitlines() if EXCEPTION_LINE.match(line)]
        ended = job.ended_at.isoformat() if job.ended_at else ""
        letters.append(
            DeadLetter(job.id, order_id, product_id, quantity, ended, raised[-1] if raised else "")
        )
    return letters


def requeue_orders(redis: Redis, order_ids: list[str] | None = None) -> int:
    """Requeue the given orders' dead letters (all of them when ``order_ids`` is None); returns
    how many were queued (one the sweep queued meanwhile is not counted twice)."""
    registry = failed_registry(redis)
    dead = set(dead_letter_ids(redis))
    wanted = dead if order_ids is None else {order_job_id(o) for o in order_ids} & dead
    requeued = 0
    for job_id in wanted:
        try:
            registry.requeue(job_id)
        except InvalidJobOperation:  # no longer in the registry
            continue
        requeued += 1
    return requeued


def forget_decided(redis: Redis) -> int:
    """Take decided orders' jobs out of the failed registry (their rows are the record: a
    failure callback that rejected the order, or a batch that decided it after all)."""
    _, decided = _split(redis)
    if decided:
        redis.zrem(failed_registry(redis).key, *decided)
    return len(decided)
