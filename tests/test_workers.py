"""Workers under pressure: a hot row, and a worker killed in the middle of a job."""

import signal
import uuid
from datetime import UTC, datetime

import pytest
from rq import Worker
from rq.registry import FailedJobRegistry
from rq.suspension import resume, suspend
from sqlalchemy import text

from db.orders import AdmittedOrder
from db.seed import seed
from service.throwaway import wait_until
from tests.support.database import order_rows, product_state, status_counts
from worker.queue import enqueue_order, order_queue

pytestmark = pytest.mark.slow


def _enqueue(redis, count, quantity=1):
    queue = order_queue(redis)
    orders = [
        AdmittedOrder(uuid.uuid4(), 1, quantity, f"10.9.{i // 256}.{i % 256}", datetime.now(UTC))
        for i in range(count)
    ]
    for order in orders:
        enqueue_order(queue, order, job_timeout=3)
    return [str(order.order_id) for order in orders]


def test_eight_workers_drain_two_thousand_orders_on_one_hot_row(system, fresh_db, redis):
    seed(fresh_db, redis, stock=10_000)
    stock_before, version_before = product_state(fresh_db)
    system.start_workers(8)
    order_ids = _enqueue(redis, 2000)

    wait_until(lambda: len(order_rows(fresh_db)) == 2000, 120, "2,000 decided orders", interval=0.5)
    assert status_counts(fresh_db) == {("confirmed", None): 2000}
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert product_state(fresh_db) == (stock_before - 2000, version_before + 2000)
    assert FailedJobRegistry(queue=order_queue(redis)).count == 0


def test_a_worker_killed_mid_job_loses_no_order_and_applies_none_twice(system, fresh_db, redis):
    system.start_workers(3)
    stock_before, _ = product_state(fresh_db)
    # Hold the product row so every worker is stuck inside its optimistic-lock UPDATE.
    blocker = fresh_db.connect()
    blocker_tx = blocker.begin()
    blocker.execute(text("SELECT 1 FROM products WHERE id = 1 FOR UPDATE"))
    order_ids = _enqueue(redis, 60)
    try:
        system.kill_worker(system.busy_worker(20))  # the whole pod: worker and its scheduler
    finally:
        blocker_tx.rollback()
        blocker.close()

    # The dead worker's job is found by a live worker's maintenance sweep and run again.
    wait_until(lambda: len(order_rows(fresh_db)) == 60, 60, "every order decided", interval=0.5)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert status_counts(fresh_db) == {("confirmed", None): 60}
    assert product_state(fresh_db)[0] == stock_before - 60


def test_sigterm_lets_a_busy_worker_finish_its_order_and_take_no_other(system, fresh_db, redis):
    system.start_workers(1)
    (process,) = system.workers
    blocker = fresh_db.connect()
    blocker_tx = blocker.begin()
    blocker.execute(text("SELECT 1 FROM products WHERE id = 1 FOR UPDATE"))
    _enqueue(redis, 5)
    try:
        system.busy_worker(20)
        process.send_signal(signal.SIGTERM)
    finally:
        blocker_tx.rollback()
        blocker.close()
    assert process.wait(30) == 0
    assert len(order_rows(fresh_db)) == 1, "the order in hand was finished"
    assert order_queue(redis).count == 4, "the others wait, queued, for the next worker"


def test_rq_suspend_holds_an_idle_worker_alive_until_resume(system, fresh_db, redis, tmp_path):
    """RQ itself looks at a suspension only between jobs, so an idle worker would still take
    the next one; ours holds idle too, beating its liveness file, and works again on resume."""
    heartbeat = tmp_path / "heartbeat"
    system.env["FLASHSALE_WORKER_HEARTBEAT_FILE"] = str(heartbeat)
    system.start_workers(1)
    (process,) = system.workers
    queue = order_queue(redis)

    def state() -> str:
        return next(w.get_state() for w in Worker.all(queue=queue) if w.pid == process.pid)

    wait_until(lambda: state() == "idle", 30, "the worker waiting for a job")
    suspend(redis)
    wait_until(lambda: state() == "suspended", 10, "the idle worker held")
    order_ids = _enqueue(redis, 5)
    # Three turns of its loop (FLASHSALE_WORKER_MAINTENANCE_INTERVAL is 1 s here): time enough
    # to take a job, were it not held; all the while it stays alive for its probe.
    beat = heartbeat.stat().st_mtime
    wait_until(lambda: heartbeat.stat().st_mtime >= beat + 3, 10, "three heartbeats while held")
    assert state() == "suspended" and not order_rows(fresh_db)
    assert queue.count == 5

    resume(redis)
    wait_until(lambda: len(order_rows(fresh_db)) == 5, 30, "the orders decided after resume")
    assert set(order_rows(fresh_db)) == set(order_ids)
