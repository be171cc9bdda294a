"""An admitted order that fell out of RQ's lists is queued again, and only then."""

import asyncio
import time
import uuid
from datetime import UTC, datetime

from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from db.orders import AdmittedOrder, apply_order
from service.admission import Decision, admit
from service.identity import ClientIdentity
from service.resources import close_resources, open_resources
from service.stock_gate import set_gate
from tests.support.database import order_rows, product_state
from worker.queue import ADMITTED_KEY, order_queue, pending_key
from worker.runner import OrderWorker
from worker.stranded import requeue_stranded


def _admit_orders(settings, count):
    async def run():
        resources = open_resources(settings)
        try:
            clients = [ClientIdentity(f"10.2.0.{i}", None, {}, "x-api-key") for i in range(count)]
            results = [await admit(resources, client, None, 1, 1, None) for client in clients]
        finally:
            await close_resources(resources)
        assert all(r.decision is Decision.ADMITTED for r in results)
        return [r.order_id for r in results]

    return asyncio.run(run())


def test_a_job_in_no_rq_list_is_queued_again_and_decided(settings, redis, fresh_db, worker_env):
    set_gate(redis, 1, 10)
    order_ids = _admit_orders(settings, 3)
    assert redis.zcard(ADMITTED_KEY) == 3
    stranded = redis.lpop("rq:queue:orders").decode()  # as if a worker died between pop and start

    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [stranded]
    assert redis.llen("rq:queue:orders") == 3
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [], "queued jobs are left alone"

    worker_env()
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert redis.zcard(ADMITTED_KEY) == 0, "each decided job takes itself off the admitted set"


def test_a_worker_applies_a_products_queued_orders_in_batches(settings, redis, fresh_db, worker_env):
    set_gate(redis, 1, 100)
    _, version = product_state(fresh_db)
    order_ids = _admit_orders(settings, 40)
    worker_env(FLASHSALE_WORKER_BATCH_SIZE="16")
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert set(order_rows(fresh_db)) == set(order_ids)
    stock, version_after = product_state(fresh_db)
    assert stock == 60
    # One version-checked update per batch of up to 17 (an order and 16 claimed), not per order.
    assert version_after - version <= 40 // 16 + 1
    assert redis.llen(pending_key(1)) == 0 and redis.zcard(ADMITTED_KEY) == 0


def test_recent_or_decided_orders_are_not_requeued(settings, redis, fresh_db):
    set_gate(redis, 1, 10)
    (order_id,) = _admit_orders(settings, 1)
    redis.lpop("rq:queue:orders")
    assert requeue_stranded(redis, fresh_db, older_than_seconds=60) == [], "too recent to call stranded"
    apply_order(fresh_db, AdmittedOrder(uuid.UUID(order_id), 1, 1, "10.2.0.0", datetime.now(UTC)))
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == []
    assert redis.zcard(ADMITTED_KEY) == 0 and redis.llen("rq:queue:orders") == 0


def test_a_dead_workers_jobs_are_recovered_while_it_still_holds_rqs_cleaning_lock(
    settings, redis, fresh_db, worker_env
):
    set_gate(redis, 1, 10)
    order_ids = _admit_orders(settings, 2)
    queue = order_queue(redis)
    # The dead worker had one job running (its started entry now expired) and had just popped
    # another (in the intermediate queue, first seen over a minute ago); it died holding RQ's
    # registry-cleaning lock, which would keep RQ's own recovery off for 899 s.
    running, popped = (job_id.decode() for job_id in redis.lrange(queue.key, 0, -1))
    redis.lrem(queue.key, 1, running)
    redis.hset(Job.key_for(running), "status", JobStatus.STARTED.value)
    redis.zadd(StartedJobRegistry(queue=queue).key, {f"{running}:dead-execution": time.time() - 1})
    redis.lmove(queue.key, queue.intermediate_queue_key)
    redis.set(queue.intermediate_queue.get_first_seen_key(popped), time.time() - 120)
    redis.set(queue.registry_cleaning_key, 1, ex=899)

    worker_env()
    worker = OrderWorker([queue], connection=redis, serializer=queue.serializer)
    worker.stranded_after_seconds = 3600  # only RQ's recovery may act here
    worker.run_maintenance_tasks()
    assert StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == []
    assert queue.intermediate_queue.get_job_ids() == []
    assert sorted(queue.get_job_ids()) == sorted([running, popped]), "both retried at once"

    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert set(order_rows(fresh_db)) == set(order_ids)


def test_a_job_popped_by_a_worker_that_died_before_starting_it_is_queued_again(settings, redis, fresh_db):
    set_gate(redis, 1, 10)
    _admit_orders(settings, 1)
    queue = order_queue(redis)
    popped = redis.lmove(queue.key, queue.intermediate_queue_key).decode()

    assert requeue_stranded(redis, fresh_db, older_than_seconds=60) == [], "too recent to call stranded"
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [popped]
    assert queue.get_job_ids() == [popped] and queue.intermediate_queue.get_job_ids() == []
