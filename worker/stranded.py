"""Lanes whose pending orders no live draining job will reach get a draining job again.

Every admitted order waits on one lane of its product, a pending list (written by admit.lua
in the same step as its ``fs:admitted`` record), and the lane's flag names the one draining
job that will apply it. RQ moves that job between lists as it works (queue → intermediate → started,
scheduled for a retry); a worker killed at the wrong moment, or a Redis restart under a
blocking pop, can leave it in none of them, or in the intermediate list of a worker that
died. This sweep looks at every lane a product can have (MAX_DRAIN_LANES, whatever
FLASHSALE_DRAIN_LANES is now), finds those whose oldest pending order was admitted long enough
ago and whose flag names no job that is waiting, running or scheduled, and queues their job
again (or a new one, when the job itself is gone); a lane with orders waiting and no flag at
all (a running drain's lease lapsed: its worker died) gets a new draining job at once. Dead
letters are among them: draining jobs whose retries all failed while PostgreSQL could not take
their orders' rejection (worker/dead_letters.py); queued again, they leave RQ's failed
registry in the same step. The sweep needs PostgreSQL (the products), so it runs them only
once PostgreSQL answers again. Draining is idempotent: a batch applied twice counts once.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import WatchError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import Engine
from sqlmodel import Session, select

from db.models import Product
from service.core.keys import MAX_DRAIN_LANES, drain_flag_key, pending_key
from service.core.settings import get_settings
from service.sale.order_jobs import entry_admitted_seconds, order_queue, queue_drain
from worker.dead_letters import failed_registry

log = logging.getLogger(__name__)


def _product_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(session.exec(select(Product.id)).all())


def _forget_stale_flag(redis: Redis, product_id: int, lane: int, job_id: str) -> None:
    """Nothing waits and the flag names a job RQ no longer runs: delete it, unless an order
    arrived meanwhile (it then waits for the next pass)."""
    flag, pending = drain_flag_key(product_id, lane), pending_key(product_id, lane)
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(flag, pending)
            if pipe.get(flag) != job_id.encode() or pipe.llen(pending):
                return
            pipe.multi()
            pipe.delete(flag)
            pipe.execute()
        except WatchError:
            return


def requeue_stranded(redis: Redis, engine: Engine, older_than_seconds: float) -> list[str]:
    """Queue again the draining jobs of lanes whose undecided orders no live job will reach;
    returns the ids of the jobs queued."""
    lanes = [(product_id, lane) for product_id in _product_ids(engine) for lane in range(MAX_DRAIN_LANES)]
    if not lanes:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for product_id, lane in lanes:
            pipe.lindex(pending_key(product_id, lane), 0)
            pipe.get(drain_flag_key(product_id, lane))
        replies = pipe.execute()
    queue = order_queue(redis)
    in_rq_hands = set(queue.get_job_ids())
    in_rq_hands |= set(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False))
    in_rq_hands |= set(ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False))
    # A live worker holds a popped job there for milliseconds before it starts it; an overdue
    # one was popped by a worker that died (RQ itself would wait another minute).
    popped = set(queue.intermediate_queue.get_job_ids()) - in_rq_hands
    dead_letters = failed_registry(redis).key
    cutoff = time.time() - older_than_seconds
    settings = get_settings()
    queued = []
    for (product_id, lane), first, flag in zip(lanes, replies[::2], replies[1::2], strict=True):
        job_id = flag.decode() if flag is not None else None
        if job_id in in_rq_hands:
            continue
        if first is None:
            if job_id is not None:
                _forget_stale_flag(redis, product_id, lane, job_id)
            continue
        # Orders waiting and no flag: a running drain's lease lapsed (its worker died, or its
        # retry waits far off) and no admission has queued a new one since: queue one now.
        if job_id is not None and entry_admitted_seconds(first) > cutoff:
            continue
        if job_id is not None and redis.exists(Job.key_for(job_id)):
            with redis.pipeline() as pipe:
                if job_id in popped:
                    pipe.lrem(queue.intermediate_queue_key, 1, job_id)
                pipe.zrem(dead_letters, job_id)
                pipe.hset(Job.key_for(job_id), "status", JobStatus.QUEUED.value)
                pipe.rpush(queue.key, job_id)
                pipe.execute()
            queued.append(job_id)
            continue
        new = queue_drain(
            redis, product_id, lane, settings.job_timeout_seconds, settings.job_retry_backoff_seconds, job_id
        )
        if new is not None:
            queued.append(new)
    if queued:
        log.warning("requeued stranded draining jobs", extra={"jobs": len(queued)})
    return queued
