"""A product whose pending orders no live draining job will reach gets its drain queued again,
and only then."""

import time
import uuid
from datetime import UTC, datetime

import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from db.orders import AdmittedOrder, apply_order
from service.cli.dev_servers import free_port
from service.core.keys import ADMITTED_KEY, drain_flag_key, pending_key
from service.core.settings import settings_from_env
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import set_gate
from tests.support.admitting import admit_orders
from tests.support.database import order_rows, product_state
from worker.dead_letters import failed_orders
from worker.runner import OrderWorker
from worker.stranded import requeue_stranded

pytestmark = pytest.mark.drain_lanes(1)  # each test follows one drain


def _work(redis) -> None:
    queue = order_queue(redis)
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)


def _drain(redis) -> str:
    return redis.get(drain_flag_key(1)).decode()


def test_a_drain_in_no_rq_list_is_queued_again_and_decides_its_orders(settings, redis, fresh_db, worker_env):
    set_gate(redis, 1, 10)
    order_ids = admit_orders(settings, 3)
    assert redis.zcard(ADMITTED_KEY) == 3 and redis.llen(pending_key(1)) == 3
    stranded = redis.lpop("rq:queue:orders").decode()  # as if a worker died between pop and start
    assert stranded == _drain(redis)

    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [stranded]
    assert redis.lrange("rq:queue:orders", 0, -1) == [stranded.encode()]
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [], "a queued drain is left alone"

    worker_env()
    _work(redis)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert redis.zcard(ADMITTED_KEY) == 0 and not redis.exists(pending_key(1), drain_flag_key(1))


def test_a_drain_whose_job_is_gone_is_replaced_by_a_new_one(settings, redis, fresh_db, worker_env):
    """The job ended without settling its last batch and RQ deleted it (or a Redis crash lost
    it): the flag names nothing RQ knows. A new draining job takes over the flag."""
    set_gate(redis, 1, 10)
    order_ids = admit_orders(settings, 2)
    gone = _drain(redis)
    redis.delete(Job.key_for(gone), "rq:queue:orders")

    (new,) = requeue_stranded(redis, fresh_db, older_than_seconds=0)
    assert new != gone and _drain(redis) == new and order_queue(redis).get_job_ids() == [new]
    worker_env()
    _work(redis)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert not redis.exists(pending_key(1), drain_flag_key(1))


def test_a_worker_applies_a_products_queued_orders_in_batches(settings, redis, fresh_db, worker_env):
    set_gate(redis, 1, 100)
    _, version = product_state(fresh_db)
    order_ids = admit_orders(settings, 40)
    worker_env(FLASHSALE_WORKER_BATCH_SIZE="16")
    _work(redis)
    assert set(order_rows(fresh_db)) == set(order_ids)
    stock, version_after = product_state(fresh_db)
    assert stock == 60
    # One version-checked update per batch of up to 16, not per order.
    assert version_after - version == 3
    assert redis.llen(pending_key(1)) == 0 and redis.zcard(ADMITTED_KEY) == 0


def test_recent_or_live_drains_are_not_requeued(settings, redis, fresh_db):
    set_gate(redis, 1, 10)
    admit_orders(settings, 1)
    job_id = redis.lpop("rq:queue:orders").decode()
    assert requeue_stranded(redis, fresh_db, older_than_seconds=60) == [], "too recent to call stranded"
    redis.zadd(StartedJobRegistry(queue=order_queue(redis)).key, {f"{job_id}:x": time.time() + 60})
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [], "running"
    assert redis.llen("rq:queue:orders") == 0


def test_a_stale_flag_over_an_empty_list_is_forgotten(settings, redis, fresh_db):
    """A flag naming a job RQ no longer runs, with nothing pending, would keep the next order's
    admission from queueing a drain: the sweep deletes it."""
    redis.set(drain_flag_key(1), "drain-1-gone")
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == []
    assert not redis.exists(drain_flag_key(1))
    set_gate(redis, 1, 10)
    admit_orders(settings, 1)
    assert order_queue(redis).get_job_ids() == [_drain(redis)], "the next admission queues a drain"


def test_a_dead_workers_drain_is_recovered_while_it_still_holds_rqs_cleaning_lock(
    settings, redis, fresh_db, worker_env
):
    """The dead worker had the drain running, had committed its batch and died before settling
    it (the started entry has expired since); it died holding RQ's registry-cleaning lock, which
    would keep RQ's own recovery off for 899 s. The retry finds the batch decided, counts it
    once, and decides the rest."""
    set_gate(redis, 1, 10)
    order_ids = admit_orders(settings, 4)
    queue = order_queue(redis)
    running = redis.lpop(queue.key).decode()
    redis.hset(Job.key_for(running), "status", JobStatus.STARTED.value)
    redis.zadd(StartedJobRegistry(queue=queue).key, {f"{running}:dead-execution": time.time() - 1})
    redis.set(queue.registry_cleaning_key, 1, ex=899)
    for order_id in order_ids[:2]:  # the batch it had committed
        apply_order(fresh_db, AdmittedOrder(uuid.UUID(order_id), 1, 1, "10.2.0.0", datetime.now(UTC)))
    stock_before, _ = product_state(fresh_db)

    worker_env()
    worker = OrderWorker([queue], connection=redis, serializer=queue.serializer)
    worker.stranded_after_seconds = 3600  # only RQ's recovery may act here
    worker.run_maintenance_tasks()
    assert StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == []
    assert queue.get_job_ids() == [running], "retried at once, the same job: it still owns the product"

    _work(redis)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert product_state(fresh_db)[0] == stock_before - 2, "the committed batch is not counted twice"
    assert redis.zcard(ADMITTED_KEY) == 0 and not redis.exists(pending_key(1), drain_flag_key(1))


def test_a_drain_popped_by_a_worker_that_died_before_starting_it_is_queued_again(settings, redis, fresh_db):
    set_gate(redis, 1, 10)
    admit_orders(settings, 1)
    queue = order_queue(redis)
    popped = redis.lmove(queue.key, queue.intermediate_queue_key).decode()

    assert requeue_stranded(redis, fresh_db, older_than_seconds=60) == [], "too recent to call stranded"
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [popped]
    assert queue.get_job_ids() == [popped] and queue.intermediate_queue.get_job_ids() == []


def test_a_dead_letter_queued_again_leaves_the_failed_registry(settings_env, redis, fresh_db, worker_env):
    """Its retries all failed while PostgreSQL was away; once PostgreSQL answers, the sweep
    runs it again and takes it out of RQ's failed registry in the same step, so the registry,
    `flashsale orders failed` and the sweep agree."""
    set_gate(redis, 1, 10)
    (order_id,) = admit_orders(
        settings_from_env({**settings_env, "FLASHSALE_JOB_RETRY_BACKOFF_SECONDS": "0"}), 1
    )
    job_id = _drain(redis)
    queue = order_queue(redis)
    worker_env(FLASHSALE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    _work(redis)
    assert [letter.order_id for letter in failed_orders(redis)] == [order_id]

    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [job_id]
    assert FailedJobRegistry(queue=queue).get_job_ids() == [] and failed_orders(redis) == []
    assert queue.get_job_ids() == [job_id]

    worker_env()
    _work(redis)
    assert order_rows(fresh_db) == {order_id: ("confirmed", None, 1)}
    assert FailedJobRegistry(queue=queue).count == 0 and redis.zcard(ADMITTED_KEY) == 0
