"""An admitted order that fell out of RQ's lists is queued again, and only then."""

import time
import uuid
from datetime import UTC, datetime

from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from db.orders import AdmittedOrder, apply_order
from service.cli.dev_servers import free_port
from service.core.keys import ADMITTED_KEY, order_job_id, pending_key
from service.core.settings import settings_from_env
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import set_gate
from tests.support.admitting import admit_orders
from tests.support.database import order_rows, product_state
from worker.dead_letters import failed_orders
from worker.runner import OrderWorker
from worker.stranded import requeue_stranded


def test_a_job_in_no_rq_list_is_queued_again_and_decided(settings, redis, fresh_db, worker_env):
    set_gate(redis, 1, 10)
    order_ids = admit_orders(settings, 3)
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
    order_ids = admit_orders(settings, 40)
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
    (order_id,) = admit_orders(settings, 1)
    redis.lpop("rq:queue:orders")
    assert requeue_stranded(redis, fresh_db, older_than_seconds=60) == [], "too recent to call stranded"
    apply_order(fresh_db, AdmittedOrder(uuid.UUID(order_id), 1, 1, "10.2.0.0", datetime.now(UTC)))
    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == []
    assert redis.zcard(ADMITTED_KEY) == 0 and redis.llen("rq:queue:orders") == 0


def test_a_dead_workers_jobs_are_recovered_while_it_still_holds_rqs_cleaning_lock(
    settings, redis, fresh_db, worker_env
):
    set_gate(redis, 1, 10)
    order_ids = admit_orders(settings, 2)
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
    job_id = order_job_id(order_id)
    queue = order_queue(redis)
    worker_env(FLASHSALE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert [letter.order_id for letter in failed_orders(redis)] == [order_id]

    assert requeue_stranded(redis, fresh_db, older_than_seconds=0) == [job_id]
    assert FailedJobRegistry(queue=queue).get_job_ids() == [] and failed_orders(redis) == []
    assert queue.get_job_ids() == [job_id]

    worker_env()
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert order_rows(fresh_db) == {order_id: ("confirmed", None, 1)}
    assert FailedJobRegistry(queue=queue).count == 0 and redis.zcard(ADMITTED_KEY) == 0
