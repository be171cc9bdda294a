"""Order jobs that gave up: listed by `flashsale orders failed`, run again by `requeue`."""

import uuid
from datetime import UTC, datetime

from rq import Callback

from db.orders import AdmittedOrder
from service.throwaway import free_port
from tests.support.cli import run_cli
from tests.support.database import order_rows
from worker.queue import ADMITTED_KEY, JOB_FUNCTION, job_arguments, order_job_id, order_queue
from worker.runner import OrderWorker


def _cli(settings_env, *args):
    return run_cli(settings_env, "orders", *args)


def test_a_job_that_gave_up_while_postgresql_was_away_is_listed_and_requeued(
    redis, fresh_db, settings_env, worker_env
):
    queue = order_queue(redis)
    order = AdmittedOrder(uuid.uuid4(), 1, 2, "203.0.113.7", datetime.now(UTC))
    # Admitted as admit.lua admits (fs:admitted), but with no retries left to spend: the job's
    # first failure is its last.
    redis.zadd(ADMITTED_KEY, {order_job_id(str(order.order_id)): int(order.admitted_at.timestamp() * 1000)})
    queue.enqueue_call(
        JOB_FUNCTION,
        args=job_arguments(order),
        job_id=order_job_id(str(order.order_id)),
        on_failure=Callback("worker.jobs.order_job_failed"),
    )
    worker_env(FLASHSALE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert order_rows(fresh_db) == {}, "PostgreSQL was away: nothing could be written"

    listed = _cli(settings_env, "failed")
    assert listed.returncode == 0
    assert str(order.order_id) in listed.stdout and "OperationalError" in listed.stdout
    assert "1 failed order job(s)" in listed.stderr

    assert _cli(settings_env, "requeue").returncode == 2  # says what to requeue
    requeued = _cli(settings_env, "requeue", str(order.order_id))
    assert requeued.returncode == 0 and "requeued 1" in requeued.stderr

    worker_env()
    OrderWorker([queue], connection=redis, serializer=queue.serializer).work(burst=True)
    assert order_rows(fresh_db) == {str(order.order_id): ("confirmed", None, 2)}
    assert "0 failed order job(s)" in _cli(settings_env, "failed").stderr
