"""Workers under pressure on the production path: orders admitted by lua/admit.lua (the
product's lanes, a pending list and one draining job each), a hot row, and workers killed or
stopped in the middle of a drain."""

import signal

import pytest
from rq import Worker
from rq.registry import FailedJobRegistry
from rq.suspension import resume, suspend
from sqlalchemy import text

from service.cli.dev_servers import wait_until
from service.core.keys import ADMITTED_KEY, drain_flag_key, pending_key
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import seed
from tests.support.admitting import admit_orders
from tests.support.database import order_rows, product_state, status_counts
from tests.support.lanes import drains, pending_count

pytestmark = pytest.mark.slow


def test_eight_workers_drain_two_thousand_orders_on_one_hot_row(system, fresh_db, redis, settings):
    seed(fresh_db, redis, stock=10_000)
    stock_before, version_before = product_state(fresh_db)
    system.start_workers(8)
    order_ids = admit_orders(settings, 2000)  # admitted while the workers run, as in a sale

    wait_until(lambda: len(order_rows(fresh_db)) == 2000, 120, "2,000 decided orders", interval=0.5)
    assert status_counts(fresh_db) == {("confirmed", None): 2000}
    assert set(order_rows(fresh_db)) == set(order_ids)
    stock, version = product_state(fresh_db)
    assert stock == stock_before - 2000
    # One version bump per batch: orders admitted behind a running drain went in its batches.
    assert version_before < version < version_before + 2000, (version_before, version)
    queue = order_queue(redis)
    wait_until(lambda: not drains(redis), 30, "the drains ended", interval=0.2)
    assert FailedJobRegistry(queue=queue).count == 0 and queue.count == 0
    assert redis.zcard(ADMITTED_KEY) == 0 and pending_count(redis) == 0
    ran = [worker.successful_job_count for worker in Worker.all(queue=queue)]
    # One draining job at a time per lane: a drain, not an order, is a job.
    assert len(ran) == 8 and 1 <= sum(ran) < 2000, f"jobs run by each worker: {ran}"


def test_a_worker_killed_mid_job_loses_no_order_and_applies_none_twice(system, fresh_db, settings):
    system.start_workers(3)
    stock_before, _ = product_state(fresh_db)
    # Hold the product row so every worker is stuck inside its optimistic-lock UPDATE.
    blocker = fresh_db.connect()
    blocker_tx = blocker.begin()
    blocker.execute(text("SELECT 1 FROM products WHERE id = 1 FOR UPDATE"))
    order_ids = admit_orders(settings, 60)
    try:
        system.kill_worker(system.busy_worker(20))  # the whole pod: worker and its scheduler
    finally:
        blocker_tx.rollback()
        blocker.close()

    # The dead worker's drain is found by a live worker's maintenance sweep and run again: it
    # still owns the product, re-reads the batch it had not settled, and counts it once.
    wait_until(lambda: len(order_rows(fresh_db)) == 60, 60, "every order decided", interval=0.5)
    assert set(order_rows(fresh_db)) == set(order_ids)
    assert status_counts(fresh_db) == {("confirmed", None): 60}
    assert product_state(fresh_db)[0] == stock_before - 60


@pytest.mark.drain_lanes(1)  # one drain, handed on
def test_sigterm_lets_a_busy_worker_finish_its_batch_and_hand_the_rest_on(system, fresh_db, redis, settings):
    system.env["FLASHSALE_WORKER_BATCH_SIZE"] = "2"
    order_ids = admit_orders(settings, 5)  # before any worker: one drain, batches of two
    blocker = fresh_db.connect()
    blocker_tx = blocker.begin()
    blocker.execute(text("SELECT 1 FROM products WHERE id = 1 FOR UPDATE"))
    system.start_workers(1)
    (process,) = system.workers
    try:
        system.busy_worker(20)
        process.send_signal(signal.SIGTERM)
    finally:
        blocker_tx.rollback()
        blocker.close()
    assert process.wait(30) == 0
    assert set(order_rows(fresh_db)) == set(order_ids[:2]), "the batch in hand was finished, no other"
    assert redis.llen(pending_key(1)) == 3
    successor = redis.get(drain_flag_key(1)).decode()
    assert order_queue(redis).get_job_ids() == [successor], "the rest waits, queued, for the next worker"


def test_rq_suspend_holds_an_idle_worker_alive_until_resume(system, fresh_db, redis, settings, tmp_path):
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
    order_ids = admit_orders(settings, 5)
    # Three turns of its loop (FLASHSALE_WORKER_MAINTENANCE_INTERVAL is 1 s here): time enough
    # to take a job, were it not held; all the while it stays alive for its probe.
    beat = heartbeat.stat().st_mtime
    wait_until(lambda: heartbeat.stat().st_mtime >= beat + 3, 10, "three heartbeats while held")
    assert state() == "suspended" and not order_rows(fresh_db)
    assert queue.count == len(drains(redis)) and pending_count(redis) == 5

    resume(redis)
    wait_until(lambda: len(order_rows(fresh_db)) == 5, 30, "the orders decided after resume")
    assert set(order_rows(fresh_db)) == set(order_ids)
