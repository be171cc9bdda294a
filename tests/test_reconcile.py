"""The reconciler puts each gate at database stock minus undecided orders, never above it."""

import uuid
from datetime import UTC, datetime

import pytest

from db.orders import AdmittedOrder, apply_order
from service.stock_gate import gate_key
from service.throwaway import wait_until
from tests.support.cli import run_cli
from worker.queue import enqueue_order, order_queue
from worker.reconcile import reconcile, undecided_units


def _queue_orders(redis, count, quantity):
    queue = order_queue(redis)
    orders = [
        AdmittedOrder(uuid.uuid4(), 1, quantity, "203.0.113.7", datetime.now(UTC)) for _ in range(count)
    ]
    for order in orders:
        enqueue_order(queue, order, job_timeout=3)
    return orders


@pytest.mark.parametrize("drifted", [1000, 0, None])
def test_a_drifted_or_lost_gate_is_set_to_stock_minus_undecided_orders(redis, fresh_db, drifted):
    _queue_orders(redis, 3, quantity=2)  # 6 units promised, not yet in the database
    if drifted is None:
        redis.delete(gate_key(1))
    else:
        redis.set(gate_key(1), drifted)
    (repair,) = reconcile(redis, fresh_db)
    assert (repair.product_id, repair.gate_before, repair.gate_after) == (1, drifted, 94)
    assert int(redis.get(gate_key(1))) == 94
    assert reconcile(redis, fresh_db) == [], "nothing left to repair"


def test_orders_already_in_the_database_are_not_counted_twice(redis, fresh_db):
    orders = _queue_orders(redis, 4, quantity=1)
    apply_order(fresh_db, orders[0])  # decided, though its job is still queued
    assert undecided_units(redis, fresh_db)[1] == 3
    redis.set(gate_key(1), 50)
    reconcile(redis, fresh_db)
    assert int(redis.get(gate_key(1))) == 99 - 3


def test_flashsale_reconcile_reports_its_repairs(redis, fresh_db, settings_env):
    redis.set(gate_key(1), 7)
    result = run_cli(settings_env, "reconcile")
    assert result.returncode == 0
    assert "product 1: gate 7 -> 100" in result.stdout and "1 gate(s) repaired" in result.stderr


@pytest.mark.slow
def test_workers_reconcile_on_their_own(system, fresh_db, redis):
    system.env["FLASHSALE_RECONCILE_INTERVAL_SECONDS"] = "1"
    system.start_workers(2)
    redis.set(gate_key(1), 12345)
    wait_until(lambda: redis.get(gate_key(1)) == b"100", 20, "a worker to repair the gate", interval=0.2)
