"""Orders that said yes but sit in none of RQ's lists get queued again.

Every admitted order's job id is in ``fs:admitted`` (written by admit.lua in the same step
as the job) until its job decides it. RQ moves a job id between lists as it works (queue →
intermediate → started, scheduled for a retry); a worker killed at the wrong moment, or a
Redis restart under a blocking pop, can leave a job in none of them, or in the intermediate
list of a worker that died. This sweep finds ids admitted long enough ago, not decided in
PostgreSQL and not waiting, running or scheduled, and queues them again. Dead letters are
among them: jobs whose retries all failed while PostgreSQL could not take their rejection
(worker/dead_letters.py); queued again, they leave RQ's failed registry in the same step.
The sweep needs PostgreSQL, so it runs them only once PostgreSQL answers again.
Jobs are idempotent, so queueing one twice applies it once.
"""

from __future__ import annotations

import logging
import time
import uuid

from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import Engine
from sqlmodel import Session, select

from db.models import Order
from service.core.keys import ADMITTED_KEY, order_id_of_job
from service.sale.order_jobs import order_queue
from worker.dead_letters import failed_registry

log = logging.getLogger(__name__)
SWEEP_BATCH = 500


def _decided(engine: Engine, job_ids: list[str]) -> set[str]:
    order_ids = {uuid.UUID(order_id_of_job(job_id)): job_id for job_id in job_ids}
    with Session(engine) as session:
        rows = session.exec(select(Order.id).where(Order.id.in_(list(order_ids))))
        return {order_ids[row] for row in rows}


def requeue_stranded(redis: Redis, engine: Engine, older_than_seconds: float) -> list[str]:
    """Queue again the admitted, undecided orders RQ has lost track of; returns their job ids."""
    cutoff_ms = (time.time() - older_than_seconds) * 1000
    overdue = [job_id.decode() for job_id in redis.zrangebyscore(ADMITTED_KEY, 0, cutoff_ms, 0, SWEEP_BATCH)]
    if not overdue:
        return []
    decided = _decided(engine, overdue)
    if decided:  # their jobs decided them but could not say so: forget them
        redis.zrem(ADMITTED_KEY, *decided)
    queue = order_queue(redis)
    in_rq_hands = set(queue.get_job_ids())
    in_rq_hands |= set(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False))
    in_rq_hands |= set(ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False))
    # A live worker holds a popped job there for milliseconds before it starts it; an overdue
    # one was popped by a worker that died (RQ itself would wait another minute).
    popped = set(queue.intermediate_queue.get_job_ids()) - in_rq_hands
    dead_letters = failed_registry(redis).key
    requeued = []
    for job_id in overdue:
        if job_id in decided or job_id in in_rq_hands:
            continue
        if not redis.exists(Job.key_for(job_id)):
            log.error("admitted order's job is gone; cannot requeue", extra={"job_id": job_id})
            continue
        with redis.pipeline() as pipe:
            if job_id in popped:
                pipe.lrem(queue.intermediate_queue_key, 1, job_id)
            pipe.zrem(dead_letters, job_id)
            pipe.hset(Job.key_for(job_id), "status", JobStatus.QUEUED.value)
            pipe.rpush(queue.key, job_id)
            pipe.execute()
        requeued.append(job_id)
    if requeued:
        log.warning("requeued stranded orders", extra={"count": len(requeued)})
    return requeued
