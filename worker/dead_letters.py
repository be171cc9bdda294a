"""RQ's failed registry is the dead-letter queue: draining jobs that failed every retry while
their product's orders are still undecided.

A draining job lands there after its last retry failed, and its failure callback has by then
either decided the batch in hand (rows ``rejected``/``failed``, units back in the gate:
PostgreSQL answered) and handed its lane's other orders to a new draining job, or, when
PostgreSQL could not take the rejections, left every order undecided: still pending and in
``fs:admitted``, ``queued`` to its buyer, its units held, and the lane's flag still naming
the failed job (so no other job drains it meanwhile). Only such jobs are dead letters, and
their lane's pending orders are the dead-lettered orders. The stranded-order sweep runs
them again once PostgreSQL answers (taking them out of the registry as it queues them) and
drops the entries of jobs no flag names any more, so the registry, ``flashsale orders
failed`` and the sweep agree; ``flashsale orders requeue`` runs them at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis import Redis
from rq.exceptions import InvalidJobOperation
from rq.job import Job
from rq.registry import FailedJobRegistry

from service.core.keys import drain_flag_key, drain_of_job, pending_key
from service.sale.order_jobs import entry_order_id, order_queue, parse_entry

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


def _split(redis: Redis) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """The failed registry's job ids: ({dead letter: its (product, lane)}, [jobs whose orders
    are decided or drained by another job])."""
    job_ids = failed_registry(redis).get_job_ids(cleanup=False)
    lanes = {job_id: drain_of_job(job_id) for job_id in job_ids}
    drains = [job_id for job_id, lane in lanes.items() if lane is not None]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in drains:
            pipe.get(drain_flag_key(*lanes[job_id]))
            pipe.llen(pending_key(*lanes[job_id]))
        replies = pipe.execute()
    dead = {
        job_id: lanes[job_id]
        for job_id, flag, waiting in zip(drains, replies[::2], replies[1::2], strict=True)
        if flag is not None and flag.decode() == job_id and waiting
    }
    return dead, [job_id for job_id in job_ids if job_id not in dead]


def dead_letter_ids(redis: Redis) -> list[str]:
    """The draining jobs whose products' orders wait, undecided, for them."""
    return list(_split(redis)[0])


def failed_orders(redis: Redis) -> list[DeadLetter]:
    """One line per dead-lettered order: its lane's pending orders, with its job's failure."""
    dead = _split(redis)[0]
    queue = order_queue(redis)
    letters = []
    for job in Job.fetch_many(list(dead), connection=redis, serializer=queue.serializer):
        if job is None:
            continue
        result = job.latest_result()  # the failure RQ recorded (job.exc_info is deprecated)
        trace = result.exc_string if result is not None else ""
        raised = [line for line in (trace or "").splitlines() if EXCEPTION_LINE.match(line)]
        ended = job.ended_at.isoformat() if job.ended_at else ""
        product_id, lane = dead[job.id]
        for raw in redis.lrange(pending_key(product_id, lane), 0, -1):
            order = parse_entry(product_id, raw).order
            letters.append(
                DeadLetter(
                    job.id,
                    str(order.order_id),
                    product_id,
                    order.quantity,
                    ended,
                    raised[-1] if raised else "",
                )
            )
    return letters


def requeue_orders(redis: Redis, order_ids: list[str] | None = None) -> int:
    """Requeue the dead letters holding the given orders (all of them when ``order_ids`` is
    None); returns how many orders they hold (a job the sweep queued meanwhile is not
    counted)."""
    registry = failed_registry(redis)
    wanted = None if order_ids is None else set(order_ids)
    requeued = 0
    for job_id, lane in _split(redis)[0].items():
        waiting = [entry_order_id(raw) for raw in redis.lrange(pending_key(*lane), 0, -1)]
        if wanted is not None and wanted.isdisjoint(waiting):
            continue
        try:
            registry.requeue(job_id)
        except InvalidJobOperation:  # no longer in the registry
            continue
        requeued += len(waiting)
    return requeued


def forget_decided(redis: Redis) -> int:
    """Take out of the failed registry the jobs no lane waits for (their orders' rows are
    the record, or another draining job holds them)."""
    _, decided = _split(redis)
    if decided:
        redis.zrem(failed_registry(redis).key, *decided)
    return len(decided)
